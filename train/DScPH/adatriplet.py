"""AdaTriplet-AM on hash codes (original DScPH repository only; off by default).

For one modality, with S_ij = 1[y_iᵀ y_j > 0] and cosine similarities s:
- triplets (a, p, n): S_ap = 1, a ≠ p, S_an = 0; the semi-hard ones with 0 < s_ap - s_an < ε contribute
  ε - (s_ap - s_an), averaged over those (strictly positive) losses;
- negative pairs: the unordered pairs {a, n} occurring in some triplet whose cosine is ≥ β_n contribute
  mean relu(h_aᵀ h_n - β_n) on the raw (unnormalised) dot products.
The reference enumerates all B³ triplets; here each anchor's negatives are sorted once and every
(anchor, positive) pair counts and sums its semi-hard negatives by binary search (B² log B memory-light).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from train.common import label_similarity

_ABOVE_COSINE = 2.0  # filler for non-negatives: larger than any cosine, so it sorts last and is never counted


def label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positives without the diagonal, negatives) of S = 1[y yᵀ > 0]."""
    similar = label_similarity(labels)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return similar & ~eye, ~similar


def semihard_triplet_loss(cos: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                          margin: float) -> torch.Tensor:
    """Mean of ε - (s_ap - s_an) over the triplets with 0 < s_ap - s_an < ε (0 when there is none)."""
    negatives, _ = torch.where(negative, cos, torch.full_like(cos, _ABOVE_COSINE)).sort(dim=1)
    prefix = F.pad(negatives.cumsum(dim=1), (1, 0))
    lo = torch.searchsorted(negatives, (cos - margin).contiguous(), right=True)  # first s_an > s_ap - ε
    hi = torch.searchsorted(negatives, cos.contiguous(), right=False)  # first s_an >= s_ap
    count = torch.where(positive, (hi - lo).clamp(min=0), torch.zeros_like(hi))
    sum_an = prefix.gather(1, hi) - prefix.gather(1, lo)
    total = torch.where(count > 0, count * (margin - cos) + sum_an, torch.zeros_like(cos)).sum()
    return total / count.sum().clamp(min=1)


def negative_pairs(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Upper-triangular mask of the unordered pairs {a, n} that occur in at least one triplet."""
    has_positive = positive.any(dim=1)
    pairs = negative & (has_positive[:, None] | has_positive[None, :])
    return torch.triu(pairs, diagonal=1)


def triplet_statistics(cos: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
                       ) -> tuple[float | None, float | None]:
    """(mean s_ap - s_an over all triplets, mean cosine of the triplets' unique negative pairs); None if empty."""
    pos, neg = positive.to(cos.dtype), negative.to(cos.dtype)
    count = (pos.sum(1) * neg.sum(1)).sum()
    gap = (neg.sum(1) * (pos * cos).sum(1) - pos.sum(1) * (neg * cos).sum(1)).sum()
    pairs = negative_pairs(positive, negative)
    gap_mean = float(gap / count) if count > 0 else None
    neg_mean = float(cos[pairs].mean()) if pairs.any() else None
    return gap_mean, neg_mean


class AutoMarginTriplet:
    """AdaTriplet-AM with its per-epoch auto margin ε and negative-pair threshold β_n (weights 1, 1).

    The reference rebuilds the miner every epoch (ε = 0.25, β_n = 0) and re-estimates both once, from the
    image call of the epoch's first batch, before its text call: ε = max(0, mean gap / K_Δ),
    β_n = 1 - (1 - mean negative-pair cosine) / K_an. `reset()` starts an epoch, `update()` re-estimates.
    """

    def __init__(self, margin: float = 0.25, beta: float = 0.0, k_delta: float = 2.0, k_an: float = 2.0):
        self.initial = (margin, beta)
        self.k_delta, self.k_an = k_delta, k_an
        self.margin, self.beta = margin, beta

    def reset(self) -> None:
        self.margin, self.beta = self.initial

    def update(self, gap_mean: float | None, neg_mean: float | None) -> None:
        if gap_mean is not None:
            self.margin = max(0.0, gap_mean / self.k_delta)
        if neg_mean is not None:
            self.beta = 1 - (1 - neg_mean) / self.k_an

    def __call__(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Triplet loss + negative-pair loss of one modality's codes (B, K) with the current ε and β_n."""
        positive, negative = label_masks(labels)
        unit = F.normalize(codes, dim=1)
        cos = unit @ unit.T
        loss = semihard_triplet_loss(cos, positive, negative, self.margin)
        pairs = (negative_pairs(positive, negative) & (cos >= self.beta)).to(codes.dtype)
        lower_bound = (F.relu(codes @ codes.T - self.beta) * pairs).sum() / pairs.sum().clamp(min=1)
        return loss + lower_bound

    def estimate(self, codes: torch.Tensor, labels: torch.Tensor) -> None:
        """Re-estimate ε and β_n from one batch of codes (the reference: the first image batch of an epoch)."""
        unit = F.normalize(codes.detach(), dim=1)
        self.update(*triplet_statistics(unit @ unit.T, *label_masks(labels)))
