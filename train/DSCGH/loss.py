"""DSCGH's per-step loss: cosine pull/push to fixed hash centres, a cosine triplet loss across modalities, and a
quantization term towards the current discrete codes of the batch's items (codes.py). README.md: formulas."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.common import cosine, float32_region, label_similarity, masked_mean


def center_loss(codes: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mean of 1 - cos(code, centre) over present classes + mean of relu(cos - δ) over absent classes."""
    cos = cosine(codes, centers)
    return masked_mean(1 - cos, labels == 1) + masked_mean(F.relu(cos - threshold), labels == 0)


def cosine_triplet_sum(anchors: torch.Tensor, anchor_labels: torch.Tensor, others: torch.Tensor,
                       other_labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Sum over all triplets (a, p, n) of relu(d(a, p) - d(a, n) + margin), d = max(1 - cos, 0).

    Positives and negatives are rows of `others` that share / do not share a label with the anchor (p = a is
    allowed: the anchor's own item in the other modality is a positive).
    """
    distance = (1 - cosine(anchors, others)).clamp(min=0)
    shares = label_similarity(anchor_labels, other_labels)
    valid = shares[:, :, None] & ~shares[:, None, :]
    return F.relu(distance[:, :, None] - distance[:, None, :] + margin)[valid].sum()


class DSCGHLoss(nn.Module):
    """The DSCGH loss on tanh codes; the hash centres (C, K) are a buffer (checkpointed, not trained)."""

    def __init__(self, centers: torch.Tensor, threshold: float, *, margin: float = 0.4, triplet_weight: float = 1.0,
                 quantization_weight: float = 1e-4):
        super().__init__()
        self.register_buffer("centers", centers.float().clone())
        self.threshold = threshold
        self.margin = margin
        self.triplet_weight = triplet_weight
        self.quantization_weight = quantization_weight

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss and terms for the (global) batch: codes (B, K), 0/1 labels (B, C), discrete targets B[index] (B, K)."""
        with float32_region(image, text, labels, targets) as (image, text, labels, targets):
            centers = self.centers.to(image.dtype)
            center = (center_loss(image, centers, labels, self.threshold)
                      + center_loss(text, centers, labels, self.threshold))
            triplet = (cosine_triplet_sum(image, labels, text, labels, self.margin)
                       + cosine_triplet_sum(text, labels, image, labels, self.margin))
            quantization = (targets - image).pow(2).sum() + (targets - text).pow(2).sum()
            loss = center + self.triplet_weight * triplet + self.quantization_weight * quantization
        return {"loss": loss, "center": center, "triplet": triplet, "quantization": quantization}
