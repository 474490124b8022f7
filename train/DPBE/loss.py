"""DPBE's similarity regression: cosine matrices of unit codes against the graded affinity tanh(L Lᵀ / 2).

Formulas: README.md, section Loss.
"""
from __future__ import annotations

import torch

from train.common import label_overlap


def affinity(labels: torch.Tensor) -> torch.Tensor:
    """A = 2 sigmoid(L Lᵀ) - 1 = tanh(L Lᵀ / 2): 0 without a shared label, 0.4621 for one, 0.7616 for two..."""
    return torch.tanh(label_overlap(labels) / 2)


def similarity_losses(image: torch.Tensor, text: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample L_s = mse(z_i z_iᵀ, A) + mse(z_t z_tᵀ, A) + mse(z_i z_tᵀ, A) for unit codes (S, B, K) -> (S,)."""
    total = image.new_zeros(image.shape[0])
    for a, b in ((image, image), (text, text), (image, text)):
        total = total + (a @ b.transpose(1, 2) - target).square().mean(dim=(1, 2))
    return total


def reduce_samples(losses: torch.Tensor, mode: str) -> torch.Tensor:
    """`last_over_S`: the reference's L_S / S (its loop overwrites the loss); `mean`: (1/S) Σ_s L_s."""
    if mode == "last_over_S":
        return losses[-1] / losses.shape[0]
    if mode == "mean":
        return losses.mean()
    raise ValueError(f"unknown loss mode {mode!r}")
