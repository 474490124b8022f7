"""DCHMT's Euclidean similarity loss on pair-softmax codes (README: Loss)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PAIRS = (("i2t", 0, 1), ("i2i", 0, 0), ("t2t", 1, 1))


def pair_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean distances between the rows of a and b (zero gradient at zero distance)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def similarity_loss(image: torch.Tensor, text: torch.Tensor, similarity: torch.Tensor, bits: int,
                    vartheta: float, loss_type: str = "l2") -> dict[str, torch.Tensor]:
    """Σ over (I,T), (I,I), (T,T) of mean((S ⊙ D)²) + mean(((1 − S) ⊙ relu(m − D))²), m = sqrt(2 K ϑ).

    `image`, `text`: (B, 2K) concatenated pair probabilities. Means run over all B² entries.
    `loss_type="l1"` drops the squares (the original repo's variant).
    """
    margin = math.sqrt(2 * bits * vartheta)
    codes = (image, text)
    terms: dict[str, torch.Tensor] = {}
    for name, i, j in PAIRS:
        distance = pair_distance(codes[i], codes[j])
        positive = similarity * distance
        negative = (1 - similarity) * F.relu(margin - distance)
        if loss_type == "l2":
            positive, negative = positive.square(), negative.square()
        terms[f"pos_{name}"] = positive.mean()
        terms[f"neg_{name}"] = negative.mean()
    terms["loss"] = sum(terms.values())
    return terms


def quantization_loss(pairs: torch.Tensor) -> torch.Tensor:
    """kalenforn's extra term Q(p) = 1 − mean((2p − 1)²) over all 2K entries: 0 for one-hot pairs."""
    return 1 - (2 * pairs - 1).square().mean()
