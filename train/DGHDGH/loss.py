"""DGHDGH's losses: triplets on real and generated hard negatives, graph classification, generator terms.

README.md, sections Loss and Reference quirks. Triplets are dense (B, B, B) masks [a, p, n]; the
reference's per-triplet (T, K) synthetic negatives are only formed where a classifier must read them
(J_ce): the cosine between an anchor and its synthetic negative has a closed form in (B, B) quantities.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from train.common import label_similarity

from .gnn import GNNDecoder, edge_attributes

# (name, anchor modality, reference modality, cross-modal?) for the graphs G(z_i), G(z_i, z_t), G(z_t, z_i), G(z_t)
GRAPHS = (("ii", 0, 0, False), ("it", 0, 1, True), ("ti", 1, 0, True), ("tt", 1, 1, False))


def triplet_mask(labels: torch.Tensor, cross: bool) -> torch.Tensor:
    """valid[a, p, n]: p shares a label with a, n shares none. Intra-modal: p != a; cross-modal: (a, a, n) too."""
    sames = label_similarity(labels)
    diffs = ~sames
    if not cross:
        sames = sames & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return sames[:, :, None] & diffs[:, None, :]


def triplet_loss(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, margin: float = 0.25,
                 negative_cos: torch.Tensor | None = None, hard: bool = False) -> torch.Tensor:
    """Mean of relu(s_an − s_ap + margin) over the triplets where it is > 0 (and s_ap < s_an if `hard`), 0 if none.

    s = x yᵀ; s_an is S[a, n], or `negative_cos[a, p, n]` = cos(x_a, ẑ_apn) for synthetic negatives.
    """
    sim = x @ y.T
    s_ap = sim[:, :, None]
    s_an = sim[:, None, :] if negative_cos is None else negative_cos
    losses = F.relu(s_an - s_ap + margin)
    mask = valid & (losses > 0)
    if hard:
        mask = mask & (s_ap < s_an)
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def eta(alpha: float, running_mean: float) -> float:
    """η = exp(−α / J̄_r), with J̄_r = 1e6 while the epoch's running mean is still 0 (so η ≈ 1)."""
    return math.exp(-alpha / (1e6 if running_mean == 0 else running_mean))


def _interpolation(x: torch.Tensor, y: torch.Tensor, edge_reprs: torch.Tensor, eta_value: float):
    """Distances (B, B) and the parts of z̃ = (1 − r) x_a + r y_n = u[a, n] + ρ v[a, n], r = (1 − λη) ρ + λη."""
    distance = torch.cdist(x, y).clamp(min=1e-6)
    c = edge_reprs * eta_value  # λη, (B, B, K) indexed [a, n]
    delta = y[None, :, :] - x[:, None, :]
    return distance, x[:, None, :] + c * delta, (1 - c) * delta


def synthetic_negatives(x: torch.Tensor, y: torch.Tensor, triplets: tuple[torch.Tensor, ...],
                        edge_reprs: torch.Tensor, eta_value: float) -> torch.Tensor:
    """ẑ (T, K) for the listed triplets (a, p, n): y_n where D_ap >= D_an, else the interpolation z̃ (HDML)."""
    a, p, n = triplets
    distance, u, v = _interpolation(x, y, edge_reprs, eta_value)
    rho = (distance[a, p] / distance[a, n])[:, None]
    return torch.where((distance[a, p] >= distance[a, n])[:, None], y[n], u[a, n] + rho * v[a, n])


def synthetic_cosine(x: torch.Tensor, y: torch.Tensor, edge_reprs: torch.Tensor, eta_value: float) -> torch.Tensor:
    """cos(x_a, ẑ_apn) for every (a, p, n): (B, B, B), without the (B, B, B, K) negatives.

    With z̃ = u + ρ v: ⟨x_a, z̃⟩ = ⟨x_a, u⟩ + ρ⟨x_a, v⟩ and ‖z̃‖² = ‖u‖² + 2ρ⟨u, v⟩ + ρ²‖v‖², all (B, B) terms.
    """
    distance, u, v = _interpolation(x, y, edge_reprs, eta_value)
    rho = distance[:, :, None] / distance[:, None, :]
    xa = x[:, None, :]
    dot = (xa * u).sum(-1)[:, None, :] + rho * (xa * v).sum(-1)[:, None, :]
    norm_sq = (u.square().sum(-1)[:, None, :] + 2 * rho * (u * v).sum(-1)[:, None, :]
               + rho.square() * v.square().sum(-1)[:, None, :])
    x_norm = x.norm(dim=1).clamp(min=1e-8)[:, None, None]
    generated = dot / (x_norm * norm_sq.clamp(min=1e-16).sqrt())
    real = F.normalize(x, dim=1, eps=1e-8) @ F.normalize(y, dim=1, eps=1e-8).T
    return torch.where(distance[:, :, None] >= distance[:, None, :], real[:, None, :], generated)


def diversity_loss(edge_reprs: torch.Tensor) -> torch.Tensor:
    """1 − sqrt(mean over edges of ‖λ_ij − mean_j' λ_ij'‖²) for one graph's (B, B, K) edge representations."""
    deviation = edge_reprs - edge_reprs.mean(dim=1, keepdim=True)
    return 1 - deviation.square().sum(-1).mean().sqrt()


def lambda3_rule(running_gen: float, beta: float = 2.0) -> float:
    """The reference's dynamic λ3: 1 − exp(−β / J̄_gen) clamped to [0.1, 0.9], inner values replaced by 0.1.

    A small negative J̄_gen (about −0.0028 < J̄_gen < 0 for β = 2) makes the exponent overflow a float: the
    reference's exp gives inf there, so λ3 = 0.1, and so does this function (instead of an OverflowError).
    """
    try:
        value = 1 - math.exp(-beta / (1e6 if running_gen == 0 else running_gen))
    except OverflowError:
        value = -math.inf
    value = min(max(value, 0.1), 0.9)
    return value if value in (0.1, 0.9) else 0.1


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """nn.CrossEntropyLoss with probability (multi-hot) targets: mean_b −Σ_c y_bc log softmax_c."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class DGHDGHLoss(nn.Module):
    """The GNN generator and the softmax classifier (training-only, checkpointed) and the three loss stages."""

    def __init__(self, bits: int, num_classes: int, layers: int = 2, heads: int = 4, softmax: str = "plus_one",
                 margin: float = 0.25, alpha: float = 5.0):
        super().__init__()
        self.gnn = GNNDecoder(bits, num_classes, layers, heads, softmax)
        self.classifier = nn.Linear(bits, num_classes)
        self.margin, self.alpha = margin, alpha

    def graphs(self, codes: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor):
        """(node_preds, edge_reprs) of the four graphs, in GRAPHS order."""
        mask = label_similarity(labels)
        outputs = []
        for _, i, j, cross in GRAPHS:
            x, y = codes[i], codes[j]
            outputs.append(self.gnn(x, y if cross else None, edge_attributes(x, y if cross else None), mask))
        return outputs

    def stage2(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
               running_r: float) -> dict[str, torch.Tensor]:
        """J_r (real negatives), J_gca (graph node classification) and J_syn (generated hard negatives)."""
        codes = (image, text)
        masks = {cross: triplet_mask(labels, cross) for cross in (False, True)}
        eta_value = eta(self.alpha, running_r)
        j_r = j_gca = j_syn = 0
        for (_, i, j, cross), (node_preds, edge_reprs) in zip(GRAPHS, self.graphs(codes, labels)):
            x, y, valid = codes[i], codes[j], masks[cross]
            j_r = j_r + triplet_loss(x, y, valid, self.margin) / 4
            j_gca = j_gca + soft_cross_entropy(node_preds, labels) / 4
            negative_cos = synthetic_cosine(x, y, edge_reprs.detach(), eta_value)
            j_syn = j_syn + triplet_loss(x, y, valid, self.margin, negative_cos, hard=True) / 4
        return {"J_r": j_r, "J_gca": j_gca, "J_syn": j_syn}

    def classifier_loss(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """J_cz: the softmax classifier on the detached hash codes of both modalities."""
        return (soft_cross_entropy(self.classifier(image.detach()), labels)
                + soft_cross_entropy(self.classifier(text.detach()), labels)) / 2

    def stage1(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
               running_r: float) -> dict[str, torch.Tensor]:
        """J_ce (generated negatives keep their negative's classes), J_sim (close to the anchor), J_div (diverse λ).

        Codes are detached: only the GNN learns (the classifier's gradients are cleared before its own step).
        """
        codes = (image.detach(), text.detach())
        masks = {cross: triplet_mask(labels, cross) for cross in (False, True)}
        eta_value = eta(self.alpha, running_r)
        j_ce = j_sim = j_div = 0
        for (_, i, j, cross), (_, edge_reprs) in zip(GRAPHS, self.graphs(codes, labels)):
            x, y, valid = codes[i], codes[j], masks[cross]
            j_div = j_div + diversity_loss(edge_reprs) / 4
            if not valid.any():
                continue
            triplets = valid.nonzero(as_tuple=True)
            negatives = synthetic_negatives(x, y, triplets, edge_reprs, eta_value)
            j_ce = j_ce + soft_cross_entropy(self.classifier(negatives), labels[triplets[2]]) / 4
            negative_cos = synthetic_cosine(x, y, edge_reprs, eta_value)
            j_sim = j_sim + (1 - negative_cos)[valid].mean() / 4
        return {"J_ce": j_ce, "J_sim": j_sim, "J_div": j_div}
