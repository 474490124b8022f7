"""DNpH's loss: the square-clamped quadratic spherical mutual information (QSMI) surrogate.

README.md, section Loss. For the image-image, text-text and image-text cosine
similarity matrices S rescaled to [0, 1], with D_ij = 1[y_i·y_j > 0] and M = B² / Σ D:

    L = Σ_S Σ_ij (D_ij S_ij - 1)² + S_ij² / M          (sum over all B² entries, diagonal included)
"""
from __future__ import annotations

import torch

from train.common import label_similarity


def neighbourhood(labels: torch.Tensor) -> torch.Tensor:
    """D (B, B): 1 where two samples share at least one label (an all-zero row has D_ii = 0)."""
    labels = labels.float()
    return label_similarity(labels).float()


def spherical_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """½(cos + 1) between the rows of a and b, normalised with an additive eps (‖a‖ + eps) as the reference."""
    a = a / (a.norm(dim=1, keepdim=True) + eps)
    b = b / (b.norm(dim=1, keepdim=True) + eps)
    return (a @ b.T + 1) / 2


def clamped_qsmi(similarity: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ (D∘S - 1)² + Σ S² / M with M = B² / Σ D recomputed from this batch (no gradient through D)."""
    inverse_prior = target.mean()  # 1 / M; 0 when no pair shares a label (the reference gives M = inf)
    return (target * similarity - 1).square().sum() + similarity.square().sum() * inverse_prior


def qsmi_loss(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
              eps: float = 1e-8) -> dict[str, torch.Tensor]:
    """DNpH's total loss (weight 1 on each matrix) and its three parts for logging.

    image, text: (B, K) continuous codes; labels: (B, C) multi-hot.
    """
    target = neighbourhood(labels).to(image.dtype)
    image_image = clamped_qsmi(spherical_similarity(image, image, eps), target)
    text_text = clamped_qsmi(spherical_similarity(text, text, eps), target)
    image_text = clamped_qsmi(spherical_similarity(image, text, eps), target)
    loss = image_image + text_text + image_text
    return {"loss": loss, "image_image": image_image, "text_text": text_text, "image_text": image_text}
