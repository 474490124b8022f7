"""DDBH's boundary-preserving loss (BPL) and class-wise quantisation (README.md, section Loss).

For every anchor row of the inner products X = u vᵀ, two base points are chosen from the batch (no
gradient): BP for the similar pairs and BPd for the dissimilar ones. The pairwise likelihood is a sigmoid
that is `y_p` at the base point, 0.99 at K/6 on the easy side and 0.01 at K/12 on the hard side (slope ×a).
The reference loops over rows with boolean masks; this is the same computation on whole B×B matrices.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from train.common import label_similarity


def likelihood_parameters(bits: int, y_p: float = 0.5) -> tuple[float, float, float]:
    """(c, a, offset) of the likelihood 1/(1+exp(f)), f = c(x−BP) + offset on the easy side, a·c(x−BP) + offset
    on the hard side: y_p at BP, 0.99 at BP + K/6, 0.01 at BP − K/12. For y_p = 0.5: c = −(6/K)·ln 99, a = 2, offset 0.
    """
    right = bits / 6
    left = right / 2
    c = math.log(y_p / (99 * (1 - y_p))) / right
    a = -math.log(99 * y_p / (1 - y_p)) / (left * c)
    return c, a, math.log((1 - y_p) / y_p)


def _tail_mean(x: torch.Tensor, mask: torch.Tensor, count: torch.Tensor, percent: float, largest: bool) -> torch.Tensor:
    """Per row, the mean of the count − floor(percent·count) largest (or smallest) entries of x where mask is set."""
    fill = -math.inf if largest else math.inf
    ordered = torch.where(mask, x, fill).sort(dim=1, descending=largest).values
    take = count - torch.floor(count.double() * percent).to(count.dtype)  # int(n * 0.9) as the reference
    keep = torch.arange(x.shape[1], device=x.device) < take[:, None]
    return torch.where(keep, ordered, 0).sum(dim=1) / take.clamp(min=1)


def base_points(inner: torch.Tensor, similar: torch.Tensor, bits: int,
                percent: float = 0.9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(BP, BPd, valid) per row of the inner products, detached.

    BP = mS − (U − mS)/U·|mS − dMax|, BPd = mD − mD/U·|mD − sMin| with U = K/4, mS / mD the similar /
    dissimilar row means clamped to [0, U], dMax the mean of the top 10 % dissimilar products and sMin the
    mean of the bottom 10 % similar ones. A row is valid when it has both similar and dissimilar pairs.
    """
    x = inner.detach()
    dissimilar = ~similar
    n_sim, n_dis = similar.sum(dim=1), dissimilar.sum(dim=1)
    upper = bits / 4
    mean_s = (torch.where(similar, x, 0).sum(dim=1) / n_sim.clamp(min=1)).clamp(0, upper)
    mean_d = (torch.where(dissimilar, x, 0).sum(dim=1) / n_dis.clamp(min=1)).clamp(0, upper)
    d_max = _tail_mean(x, dissimilar, n_dis, percent, largest=True)
    s_min = _tail_mean(x, similar, n_sim, percent, largest=False)
    bp = mean_s - (upper - mean_s) / upper * (mean_s - d_max).abs()
    bpd = mean_d - mean_d / upper * (mean_d - s_min).abs()
    return bp, bpd, (n_sim > 0) & (n_dis > 0)


def boundary_logits(diff: torch.Tensor, easy: torch.Tensor, bits: int, y_p: float = 0.5) -> torch.Tensor:
    """f of the likelihood p = 1/(1+exp(f)) at diff = x − base point: c·diff on the easy side, a·c·diff on the hard."""
    c, a, offset = likelihood_parameters(bits, y_p)
    return torch.where(easy, c * diff, a * c * diff) + offset


def _masked_row_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of each row over the masked entries (0 for a row without any)."""
    return torch.where(mask, values, 0).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def boundary_loss_at(inner: torch.Tensor, similar: torch.Tensor, bp: torch.Tensor, bpd: torch.Tensor,
                     valid: torch.Tensor, bits: int, y_p: float = 0.5) -> torch.Tensor:
    """BPL for given base points: mean over valid rows of (mean similar-pair loss + mean dissimilar-pair loss).

    Similar pairs: softplus(f) with f = c(x−BP) (x > BP, easy) or a·c(x−BP) (x < BP, hard); dissimilar pairs:
    softplus(−f) with f around BPd, easy for x < BPd. Products exactly at their base point are dropped.
    """
    count = valid.sum()
    if count == 0:
        return inner.new_zeros(())
    diff_s = inner - bp[:, None]
    diff_d = inner - bpd[:, None]
    f_s = boundary_logits(diff_s, diff_s > 0, bits, y_p)
    f_d = boundary_logits(diff_d, diff_d < 0, bits, y_p)
    similar_term = _masked_row_mean(F.softplus(f_s), similar & (diff_s != 0))
    dissimilar_term = _masked_row_mean(F.softplus(-f_d), ~similar & (diff_d != 0))
    return torch.where(valid, similar_term + dissimilar_term, 0).sum() / count


def boundary_loss(u: torch.Tensor, v: torch.Tensor, similar: torch.Tensor, bits: int) -> torch.Tensor:
    """BPL(u, v): anchors are the rows of u, base points chosen per row without gradient."""
    inner = u @ v.T
    return boundary_loss_at(inner, similar, *base_points(inner, similar, bits), bits)


def classwise_quantization(u: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
    """Q(u) = mean over B×K of S (u − sign(u))²: each sample's error weighted by its in-batch neighbour count."""
    return (similar.to(u.dtype) @ (u - u.sign()).square()).mean()


class BoundaryHashLoss(nn.Module):
    """J = BPL(I,I) + BPL(T,T) + BPL(I,T) + w·(Q(I) + Q(T)) on tanh codes (w = 0.1 in the reference)."""

    def __init__(self, bits: int, quantization_weight: float = 0.1):
        super().__init__()
        self.bits = bits
        self.quantization_weight = quantization_weight

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        similar = label_similarity(labels)
        with torch.autocast(image.device.type, enabled=False):  # base points and ties in float32 at least
            dtype = torch.promote_types(image.dtype, torch.float32)
            image, text = image.to(dtype), text.to(dtype)
            terms = {"bpl_ii": boundary_loss(image, image, similar, self.bits),
                     "bpl_tt": boundary_loss(text, text, similar, self.bits),
                     "bpl_it": boundary_loss(image, text, similar, self.bits),
                     "quantization": classwise_quantization(image, similar) + classwise_quantization(text, similar)}
        loss = terms["bpl_ii"] + terms["bpl_tt"] + terms["bpl_it"] + self.quantization_weight * terms["quantization"]
        return {"loss": loss, **terms}
