"""DDWSH's margin loss with learnable per-class boundaries β (README.md, section Loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.distance_weighted import LOWER_CUTOFF, MINER_INPUTS

from .miner import POSITIVE_SAMPLING, sample_triplets


class MarginLoss(nn.Module):
    """Margin loss on L2-normalised codes with distance-weighted triplets; `beta` (C,) is learnable.

    For anchor a with positive p and negative n: relu(d_ap − β_a + m) + relu(β_a − d_an + m), β_a the mean of
    the anchor's class betas; the sum over anchors is divided by the number of triplets with an active term.
    """

    def __init__(self, num_classes: int, beta: float = 1.2, margin: float = 0.2,
                 miner_input: str = "distance_matrix", positives: str = "one", cutoff: float = LOWER_CUTOFF):
        super().__init__()
        if miner_input not in MINER_INPUTS:
            raise ValueError(f"unknown miner input {miner_input!r}; choose one of {MINER_INPUTS}")
        if positives not in POSITIVE_SAMPLING:
            raise ValueError(f"unknown positive sampling {positives!r}; choose one of {POSITIVE_SAMPLING}")
        self.margin = margin
        self.miner_input = miner_input
        self.positives = positives
        self.cutoff = cutoff
        self.beta = nn.Parameter(torch.full((num_classes,), float(beta)))

    def anchor_beta(self, labels: torch.Tensor) -> torch.Tensor:
        """β_a = Σ_c L_ac β_c / Σ_c L_ac (anchors without labels get 0; they never form a triplet)."""
        return (labels @ self.beta.to(labels.dtype)) / labels.sum(dim=1).clamp_min(1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """ML(x) (y None: within one modality) or ML(x, y) (anchors are rows of x, candidates rows of y)."""
        x_hat = F.normalize(x, dim=1)
        y_hat = x_hat if y is None else F.normalize(y, dim=1)
        distances = torch.cdist(x_hat, y_hat).clamp_min(1e-8)
        positive, negative, valid = sample_triplets(distances.detach(), labels, self.miner_input, x.shape[1],
                                                    self.positives, generator, self.cutoff)
        d_ap = distances.gather(1, positive)
        d_an = distances.gather(1, negative)
        beta = self.anchor_beta(labels)[:, None]
        pos = F.relu(d_ap - beta + self.margin)
        neg = F.relu(beta - d_an + self.margin)
        mask = valid.to(pos.dtype)
        total = ((pos + neg) * mask).sum()
        count = (((pos > 0) | (neg > 0)) & valid).sum()
        return total / count.clamp_min(1)
