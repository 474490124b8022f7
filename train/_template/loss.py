"""The template's loss: pairwise cosine regression to the label similarity, plus quantization.

For codes a, b (B×K) and S_ij = 1 when items i and j share a label, else 0:
    pairwise(a, b) = mean_ij (cos(a_i, b_j) − (2 S_ij − 1))²
    loss = pairwise(I, T) + pairwise(I, I) + pairwise(T, T) + w · (mean (I − sign I)² + mean (T − sign T)²)
"""
from __future__ import annotations

import torch

from train.common import cosine, label_similarity


def pairwise_cosine_loss(a: torch.Tensor, b: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the cosine of each (a_i, b_j) and 2·S_ij − 1 (±1 targets)."""
    return (cosine(a, b) - (2 * similarity - 1)).square().mean()


def quantization_loss(codes: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the continuous codes to their signs."""
    return (codes - codes.sign()).square().mean()


def template_loss(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                  quantization_weight: float) -> dict[str, torch.Tensor]:
    """{"loss", "pairwise", "quantization"} of a batch (call it on the gathered global batch)."""
    similarity = label_similarity(labels).to(image.dtype)
    pairwise = (pairwise_cosine_loss(image, text, similarity) + pairwise_cosine_loss(image, image, similarity)
                + pairwise_cosine_loss(text, text, similarity))
    quantization = quantization_loss(image) + quantization_loss(text)
    return {"loss": pairwise + quantization_weight * quantization, "pairwise": pairwise, "quantization": quantization}
