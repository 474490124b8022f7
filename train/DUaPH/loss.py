"""DUaPH's losses (README.md, section Loss): a multi-similarity loss on row-normalised
Gram matrices, and the uncertainty (mutual-likelihood) term between paired image and text Gaussians."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from train.common import label_similarity

MLS_MODES = ("reference", "pfe")


def multi_similarity_loss(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, alpha: float = 2.0,
                          beta: float = 40.0, lam: float = 0.1, margin: float = 0.1) -> torch.Tensor:
    """MS(A, B): S = row-normalised A Bᵀ; per anchor row, mined positives/negatives enter
    (1/α) log(1 + Σ exp(−α(S − λ))) + (1/β) log(1 + Σ exp(β(S − λ))); the sum over anchors is divided by B.

    Positives share a label and have S < 1 − 1e-5; negatives share none. Negatives with S + m > min(positives)
    and positives with S − m < max(negatives) are kept; anchors left without either contribute 0.
    """
    sim = F.normalize(a @ b.T, dim=1)
    related = label_similarity(labels)
    positive = related & (sim < 1 - 1e-5)
    negative = ~related
    inf = torch.tensor(float("inf"), dtype=sim.dtype, device=sim.device)
    min_pos = torch.where(positive, sim, inf).amin(dim=1, keepdim=True).detach()
    max_neg = torch.where(negative, sim, -inf).amax(dim=1, keepdim=True).detach()
    hard_negative = negative & (sim + margin > min_pos)
    hard_positive = positive & (sim - margin < max_neg)
    valid = hard_negative.any(dim=1) & hard_positive.any(dim=1)
    zero = torch.zeros_like(sim)
    pos_sum = torch.where(hard_positive, torch.exp(-alpha * (sim - lam)), zero).sum(dim=1)
    neg_sum = torch.where(hard_negative, torch.exp(beta * (sim - lam)), zero).sum(dim=1)
    per_anchor = torch.log1p(pos_sum) / alpha + torch.log1p(neg_sum) / beta
    return torch.where(valid, per_anchor, torch.zeros_like(per_anchor)).sum() / a.shape[0]


def uncertainty_loss(mu_image: torch.Tensor, var_image: torch.Tensor, mu_text: torch.Tensor, var_text: torch.Tensor,
                     mode: str = "reference") -> torch.Tensor:
    """Likelihood term between the paired Gaussians N(μ_I, σ²_I) and N(μ_T, σ²_T), inputs (B, K).

    "reference": the reference's B×B×K broadcast in closed form,
        mean_b(‖Δμ_b‖⁴) · mean_{b,k}(1 / (σ²_I + σ²_T)) + mean_{b,k} log(2σ²_I + 1).
    "pfe": the PFE mutual-likelihood score, mean_b Σ_k ½[Δμ² / (σ²_I + σ²_T) + log(σ²_I + σ²_T)].
    """
    if mode == "reference":
        distance = (mu_image - mu_text).square().sum(dim=1)
        return distance.square().mean() * (var_image + var_text).reciprocal().mean() + \
            torch.log(2 * var_image + 1).mean()
    if mode == "pfe":
        var = var_image + var_text
        return 0.5 * ((mu_image - mu_text).square() / var + var.log()).sum(dim=1).mean()
    raise ValueError(f"unknown mls mode {mode!r}; choose one of {MLS_MODES}")
