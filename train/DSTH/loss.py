"""DSTH's losses: hypergraph node classification, DTSH triplet likelihood, NASA self-ranking on CLIP features.

Per step (reference `train/hash_train.py`): L = CE(HGNN_I) + CE(HGNN_T) + DTSH(I, T) + DTSH(I) + DTSH(T)
+ SR(f_I, s_I) + SR(f_T, s_T) (+ w · the class-Gaussian distribution losses, w = 0 in the reference).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from train.common import float32_region, label_similarity

from .hypergraph import ClassGaussians, HypergraphClassifier


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """nn.CrossEntropyLoss with multi-hot targets: mean_b −Σ_c y_bc log softmax_c (not divided by label counts)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def dtsh_loss(u: torch.Tensor, labels: torch.Tensor, v: torch.Tensor | None = None, margin: float = 0.5,
              quantization: float = 0.1, max_entries: int = 1 << 24) -> torch.Tensor:
    """DTSH triplet likelihood of anchors `u` against candidates `v` (default `u`), plus q · mean (u − sign u)².

    θ = u vᵀ; a pair (i, j) is positive when the samples share a label (j = i included). For every row with at least
    one positive and one negative: mean over its (p, n) of softplus(−clamp(θ_ip − θ_in − margin, −100, 50));
    the rows' mean (0 when no row qualifies). The (rows, B, B) triplet tensor is built in chunks of rows of at most
    `max_entries` entries, each recomputed in the backward pass (gradient checkpointing), so a gathered global batch
    of 512 needs no 134 M-entry tensors.
    """
    theta = u @ (u if v is None else v).T
    positive = label_similarity(labels)
    negative = ~positive
    rows = positive.any(dim=1) & negative.any(dim=1)
    quant = quantization * (u - u.sign()).square().mean()
    if not rows.any():
        return quant
    theta, positive, negative = theta[rows], positive[rows], negative[rows]
    chunk = max(1, max_entries // theta.shape[1] ** 2)
    if chunk >= len(theta):
        per_row = _triplet_row_losses(theta, positive, negative, margin)
    else:
        per_row = torch.cat([checkpoint(_triplet_row_losses, theta[i:i + chunk], positive[i:i + chunk],
                                        negative[i:i + chunk], margin, use_reentrant=False)
                             for i in range(0, len(theta), chunk)])
    return per_row.mean() + quant


def _triplet_row_losses(theta: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                        margin: float) -> torch.Tensor:
    """Per row: mean over its (positive p, negative n) of softplus(−clamp(θ_p − θ_n − margin, −100, 50))."""
    triple = (theta[:, :, None] - theta[:, None, :] - margin).clamp(-100, 50)
    mask = positive[:, :, None] & negative[:, None, :]
    return (F.softplus(-triple) * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))


class StructureHead(nn.Module):
    """NASA's structure embedding s ∈ (0.5, 1.5)^D of a CLIP feature: Linear-BN-Linear-BN-sigmoid, 1 + (σ − 0.5).

    BatchNorms use the batch statistics in every mode (the reference never leaves training mode).
    """

    def __init__(self, dim: int = 512, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden, track_running_stats=False),
                                 nn.Linear(hidden, dim), nn.BatchNorm1d(dim, track_running_stats=False), nn.Sigmoid())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return 1 + 0.5 * (2 * self.net(features) - 1)


def self_ranking_loss(features: torch.Tensor, structure: torch.Tensor, margin: float = 3.0,
                      scale: float = 10.0) -> torch.Tensor:
    """NASA's point-wise self-ranking loss (Li et al. AAAI 2022) on features (B, D) with structure s (B, D).

    d̃_ij = sqrt(Σ_f s_if (e_if − e_jf)²) for i ≠ j. Anchors from the plain distances d (all B² entries, the zero
    diagonal included; detached): η₁ = mean d, η₂ = max(0.2 η₁, η₁ − margin · std d). With a = |d̃ − η₁|,
    b = |d̃ − η₂| and c = e^{−scale·a} / (e^{−scale·a} + e^{−scale·b}): mean over i ≠ j of c a + (1 − c) b.
    Computed in float64 (the quadratic expansion of d̃² cancels); 0 for fewer than two samples.
    """
    size = features.shape[0]
    if size < 2:
        return features.new_zeros(())
    e, s = features.double(), structure.double()
    with torch.no_grad():
        square = e.square().sum(dim=1)
        plain = (square[:, None] + square[None, :] - 2 * e @ e.T).clamp_min(1e-12).sqrt()
        plain.fill_diagonal_(0)
        mean, std = plain.mean(), plain.std()
        anchors = torch.stack([mean, torch.maximum(0.2 * mean, mean - margin * std)])
    e2 = e.square()
    adaptive = (s * e2).sum(dim=1)[:, None] - 2 * (s * e) @ e.T + s @ e2.T
    # the reference clamps every (e_if − e_jf)² at 1e-12: for coinciding samples that is this floor
    adaptive = adaptive.clamp_min(1e-12 * s.sum(dim=1)[:, None]).sqrt()
    off = adaptive[~torch.eye(size, dtype=torch.bool, device=adaptive.device)]
    a, b = (off - anchors[0]).abs(), (off - anchors[1]).abs()
    c = torch.sigmoid(scale * (b - a))  # = e^{−scale a} / (e^{−scale a} + e^{−scale b})
    return (c * a + (1 - c) * b).mean().to(features.dtype)


class DSTHLoss(nn.Module):
    """Training-only parts (checkpointed with the criterion) and the per-step loss.

    Per modality: class Gaussians → hypergraph → HGNN classifier, and a NASA structure head on the CLIP feature.
    """

    def __init__(self, bits: int, num_classes: int, feature_dim: int = 512, hidden: int = 1024,
                 tau: float = 27.0, alpha: float = 0.1, dtsh_margin: float = 0.5, quantization: float = 0.1,
                 sr_margin: float = 3.0, sr_scale: float = 10.0, distribution_weight: float = 0.0,
                 graph_weight: float = 1.0, dtsh_weight: float = 1.0, self_ranking_weight: float = 1.0):
        super().__init__()
        self.gaussians = nn.ModuleList(ClassGaussians(num_classes, bits, tau, alpha) for _ in range(2))
        self.classifiers = nn.ModuleList(HypergraphClassifier(bits, num_classes, hidden) for _ in range(2))
        self.structure = nn.ModuleList(StructureHead(feature_dim) for _ in range(2))
        self.dtsh_margin, self.quantization = dtsh_margin, quantization
        self.sr_margin, self.sr_scale = sr_margin, sr_scale
        self.distribution_weight = distribution_weight
        self.graph_weight, self.dtsh_weight, self.self_ranking_weight = graph_weight, dtsh_weight, self_ranking_weight

    def graph_terms(self, modality: int, codes: torch.Tensor, labels: torch.Tensor):
        """(distribution loss, CE of the HGNN's node logits) of one modality; CE is 0 for batches under 2 samples
        or without a labelled sample (BatchNorm and the hypergraph need them)."""
        distribution, incidence = self.gaussians[modality](codes, labels)
        if codes.shape[0] < 2 or incidence.shape[1] == 0:
            return distribution, codes.new_zeros(())
        return distribution, soft_cross_entropy(self.classifiers[modality](codes, incidence), labels)

    def forward(self, image: torch.Tensor, text: torch.Tensor, image_features: torch.Tensor,
                text_features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """`image`/`text`: tanh codes (B, K); `*_features`: CLIP pooled features (B, D); `labels` (B, C) multi-hot."""
        with float32_region(image, text, image_features, text_features, labels) as (x, y, fx, fy, lab):
            dist_i, ce_i = self.graph_terms(0, x, lab)
            dist_t, ce_t = self.graph_terms(1, y, lab)
            d_it = dtsh_loss(x, lab, y, self.dtsh_margin, self.quantization)
            d_i = dtsh_loss(x, lab, None, self.dtsh_margin, self.quantization)
            d_t = dtsh_loss(y, lab, None, self.dtsh_margin, self.quantization)
            sr_i = self._self_ranking(0, fx)
            sr_t = self._self_ranking(1, fy)
            graph = ce_i + ce_t
            dtsh = d_it + d_i + d_t
            ranking = sr_i + sr_t
            distribution = dist_i + dist_t
            loss = (self.graph_weight * graph + self.dtsh_weight * dtsh + self.self_ranking_weight * ranking
                    + self.distribution_weight * distribution)
        return {"loss": loss, "graph_ce": graph, "dtsh": dtsh, "self_ranking": ranking, "distribution": distribution}

    def _self_ranking(self, modality: int, features: torch.Tensor) -> torch.Tensor:
        if features.shape[0] < 2:
            return features.new_zeros(())
        return self_ranking_loss(features, self.structure[modality](features), self.sr_margin, self.sr_scale)
