"""DSTH's semantic hypergraph: class Gaussians give a soft incidence matrix, a two-layer HGNN classifies its nodes.

The batch samples are the nodes and the classes present in the batch the hyperedges (HIST, Lim et al. CVPR 2022):
a sample belongs fully to the hyperedges of its labels and softly, exp(−α M), to the others, with M its squared
Mahalanobis distance to the class Gaussian.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mahalanobis(codes: torch.Tensor, means: torch.Tensor, log_vars: torch.Tensor) -> torch.Tensor:
    """(B, C) squared Mahalanobis distances Σ_f (x̂_bf − μ̂_cf)² / exp(relu6(v_cf)) of unit codes to unit means."""
    x = F.normalize(codes, dim=-1)
    mu = F.normalize(means, dim=-1)
    variances = F.relu6(log_vars).exp()
    return ((x[:, None, :] - mu[None, :, :]).square() / variances[None]).sum(dim=-1)


class ClassGaussians(nn.Module):
    """One diagonal Gaussian per class on the unit sphere of the codes: learnable means and log-variances (C, K).

    Both start as kaiming_normal(fan_out) = N(0, 2/C), as the reference (HIST's init); the log-variances pass
    through relu6, so variances lie in [1, e⁶].
    """

    def __init__(self, num_classes: int, bits: int, tau: float = 27.0, alpha: float = 0.1):
        super().__init__()
        self.tau, self.alpha = tau, alpha
        self.means = nn.Parameter(torch.empty(num_classes, bits))
        self.log_vars = nn.Parameter(torch.empty(num_classes, bits))
        nn.init.kaiming_normal_(self.means, mode="fan_out")
        nn.init.kaiming_normal_(self.log_vars, mode="fan_out")

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distribution loss, incidence H (B, E)) for the batch; E = number of classes present in the batch.

        Distribution loss: mean over labelled samples of −log Σ_{c ∈ labels} softmax_c(−τ M). H[b, e] = 1 where
        sample b has class e, else exp(−α M[b, e]).
        """
        distance = mahalanobis(codes, self.means, self.log_vars)
        present = labels.sum(dim=0) != 0
        t = labels[:, present].to(distance.dtype)
        incidence = t + (-self.alpha * distance[:, present]).exp() * (1 - t)
        logits = -self.tau * distance
        labelled = labels.sum(dim=1) != 0
        if not labelled.any():
            return distance.new_zeros(()), incidence
        own = logits.masked_fill(labels == 0, float("-inf"))[labelled].logsumexp(dim=1)
        loss = (logits[labelled].logsumexp(dim=1) - own).mean()
        return loss, incidence


def propagation_matrix(incidence: torch.Tensor) -> torch.Tensor:
    """HGNN's G = Dv^{-1/2} H W De^{-1} Hᵀ Dv^{-1/2} with unit hyperedge weights W (B, B)."""
    node_scale = incidence.sum(dim=1).rsqrt()[:, None]
    scaled = incidence * node_scale
    return (scaled / incidence.sum(dim=0)[None, :]) @ scaled.T


class HypergraphClassifier(nn.Module):
    """Two HGNN layers (Feng et al. AAAI 2019): G·Linear(K, hidden) → BatchNorm → LeakyReLU(0.1) → G·Linear(hidden, C).

    The BatchNorm always normalises with the batch statistics (the reference never leaves training mode).
    """

    def __init__(self, bits: int, num_classes: int, hidden: int = 1024):
        super().__init__()
        self.theta1 = nn.Linear(bits, hidden)
        self.bn1 = nn.BatchNorm1d(hidden, track_running_stats=False)
        self.theta2 = nn.Linear(hidden, num_classes)

    def forward(self, codes: torch.Tensor, incidence: torch.Tensor) -> torch.Tensor:
        """Class logits (B, C) of the nodes `codes` (B, K) on the hypergraph `incidence` (B, E)."""
        g = propagation_matrix(incidence)
        h = F.leaky_relu(self.bn1(g @ self.theta1(codes)), 0.1)
        return g @ self.theta2(h)
