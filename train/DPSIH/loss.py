"""DPSIH's loss (README.md, section Loss): J = 100·MSC + α1·DC + α2·(ED(R_i) + ED(R_t))."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from train.common import label_similarity


def set_similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """sim[a, b] = max_{k, k'} ⟨x[a, k], y[b, k']⟩ for x (B1, n, K), y (B2, n, K) -> (B1, B2)."""
    return torch.einsum("akd,bld->abkl", x, y).flatten(2).amax(dim=-1)


def msc_loss(x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, margin: float = 0.25) -> torch.Tensor:
    """Multi-semantic correlation triplet loss with anchors from x and positives/negatives from y.

    Positives share a label with the anchor (the diagonal excluded, also across modalities), negatives share
    none; triplets with t = sim_ap − sim_an ≤ margin are kept and the loss is the mean of margin − t over them
    (0 when none is kept). The (B, B, B) mask is what the loss is made of (2·10^6 entries at batch 128).
    """
    sim = set_similarity(x, y)
    sames = label_similarity(labels)
    diffs = ~sames
    sames = sames & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    gap = sim.unsqueeze(2) - sim.unsqueeze(1)  # [a, p, n] = sim_ap − sim_an
    kept = sames.unsqueeze(2) & diffs.unsqueeze(1) & (gap <= margin)
    count = kept.sum()
    if count == 0:
        return sim.new_zeros(())
    return (margin - gap)[kept].sum() / count


def laplace_kernel(x: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """exp(−γ ‖x_i − y_j‖) with exact Euclidean distances (zero gradient at zero distance)."""
    return torch.exp(-gamma * torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist"))


def distribution_consistency(x: torch.Tensor, y: torch.Tensor, gamma: float = 0.5,
                             reduction: str = "sum") -> torch.Tensor:
    """MMD-like Σ (or mean) of k(x_i, x_j) − 2 k(x_i, y_j) + k(y_i, y_j) over all rows of x, y (N, K)."""
    reduce = torch.sum if reduction == "sum" else torch.mean
    return (reduce(laplace_kernel(x, x, gamma)) - 2 * reduce(laplace_kernel(x, y, gamma))
            + reduce(laplace_kernel(y, y, gamma)))


def embedding_diversity(residuals: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Per sample ‖R̂R̂ᵀ − diag‖_F / n² of the row-normalised residuals (B, n, K); summed (or averaged) over B."""
    unit = F.normalize(residuals, dim=-1)
    n = unit.shape[1]
    gram = unit @ unit.transpose(1, 2)
    off_diagonal = gram * (1 - torch.eye(n, dtype=gram.dtype, device=gram.device))
    per_sample = off_diagonal.flatten(1).norm(dim=1) / n ** 2
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def dpsih_loss(image: torch.Tensor, text: torch.Tensor, image_residual: torch.Tensor, text_residual: torch.Tensor,
               labels: torch.Tensor, margin: float = 0.25, alpha1: float = 0.01, alpha2: float = 0.01,
               gamma: float = 0.5, msc_weight: float = 100.0, reduction: str = "sum") -> dict[str, torch.Tensor]:
    """Total loss and its parts for embeddings E (B, n, K), residuals R (B, n, K) and labels (B, C).

    MSC = MSC(E_i, E_i) + MSC(E_t, E_t) + MSC(E_i, E_t); DC and ED only when n > 1 (as the reference).
    `reduction="sum"` is the reference trainer's (its loss is built with reduction = rank 0).
    """
    out = {"msc_ii": msc_loss(image, image, labels, margin), "msc_tt": msc_loss(text, text, labels, margin),
           "msc_it": msc_loss(image, text, labels, margin)}
    out["msc"] = out["msc_ii"] + out["msc_tt"] + out["msc_it"]
    loss = msc_weight * out["msc"]
    if image.shape[1] > 1:
        out["dc"] = distribution_consistency(image.flatten(0, 1), text.flatten(0, 1), gamma, reduction)
        out["ed"] = embedding_diversity(image_residual, reduction) + embedding_diversity(text_residual, reduction)
        loss = loss + alpha1 * out["dc"] + alpha2 * out["ed"]
    out["loss"] = loss
    return out
