"""The Multi-Similarity loss of DMsH-LN (Wang et al., CVPR 2019, on a row-normalised Gram matrix), vectorised.

README.md, section Loss. The reference loops over anchors in Python; here every anchor is
handled at once with masks, reproducing its per-anchor min/max over the filtered sets, both skip rules and the
division by the full batch size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .labelnet import LabelNet

# hard-coded constants of the reference: threshold λ, mining margin m, scales α_p and α_n, self-pair filter
THRESH, MARGIN, SCALE_POS, SCALE_NEG, SELF_EPS = 0.5, 0.1, 2.0, 40.0, 1e-5


def positive_mask(codes: torch.Tensor) -> torch.Tensor:
    """P_ij = 1[c_iᵀ c_j > 0] for label vectors or label codes c."""
    return (codes @ codes.T) > 0


def multi_similarity_loss(feats: torch.Tensor, positive: torch.Tensor, other: torch.Tensor | None = None
                          ) -> torch.Tensor:
    """MS(F, P, G): Ŝ = rows of F Gᵀ L2-normalised (not cosine similarity); mining, then soft weighting per anchor.

    For anchor i: pos = {Ŝ_ij : P_ij, Ŝ_ij < 1 - 1e-5}, neg = {Ŝ_ij : not P_ij}; hard negatives s + m > min(pos),
    hard positives s - m < max(neg); anchors without a hard positive or a hard negative are skipped;
    ℓ_i = log(1 + Σ e^{-α_p(s-λ)}) / α_p + log(1 + Σ e^{α_n(s-λ)}) / α_n; the sum over kept anchors / B.
    """
    sim = F.normalize(feats @ (feats if other is None else other).T, dim=1)
    pos = positive & (sim < 1 - SELF_EPS)
    neg = ~positive
    big = torch.finfo(sim.dtype).max
    min_pos = torch.where(pos, sim, torch.full_like(sim, big)).amin(dim=1, keepdim=True)
    max_neg = torch.where(neg, sim, torch.full_like(sim, -big)).amax(dim=1, keepdim=True)
    hard_neg = neg & (sim + MARGIN > min_pos)  # empty when pos is empty (min_pos = +big)
    hard_pos = pos & (sim - MARGIN < max_neg)  # empty when neg is empty (max_neg = -big)
    zero = torch.zeros_like(sim)
    pos_term = torch.log1p(torch.where(hard_pos, torch.exp(-SCALE_POS * (sim - THRESH)), zero).sum(1)) / SCALE_POS
    neg_term = torch.log1p(torch.where(hard_neg, torch.exp(SCALE_NEG * (sim - THRESH)), zero).sum(1)) / SCALE_NEG
    keep = hard_pos.any(dim=1) & hard_neg.any(dim=1)
    return torch.where(keep, pos_term + neg_term, torch.zeros_like(pos_term)).sum() / len(feats)


class DMsHLNLoss(nn.Module):
    """MS(H^I) + MS(H^T) + MS(H^I, G=H^T), positives from LabelNet codes (unified) or raw labels (original)."""

    def __init__(self, num_classes: int, bits: int, similarity_source: str = "labels"):
        super().__init__()
        self.labelnet = LabelNet(num_classes, bits) if similarity_source == "labelnet" else None

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        # only the sign of c_iᵀc_j is used, so no gradient could reach LabelNet anyway (as in the reference)
        with torch.no_grad():
            positive = positive_mask(labels if self.labelnet is None else self.labelnet(labels))
        out = {"ms_image": multi_similarity_loss(image, positive),
               "ms_text": multi_similarity_loss(text, positive),
               "ms_cross": multi_similarity_loss(image, positive, other=text)}
        loss = out["ms_image"] + out["ms_text"] + out["ms_cross"]
        # every kept anchor adds a positive term, so 0 means none was kept: like the reference (no gradient
        # reaches the model), return it detached and the base skips the step (no weight decay, no moments)
        out["loss"] = loss.detach() if float(loss.detach()) == 0.0 else loss
        return out
