"""The online diagonal Laplace posterior of a `Linear -> L2Norm` hash head, in closed form (plain torch).

README.md, sections Model and Loss. Parameter vectors use the `parameters_to_vector`
layout of the reference: the weight (K, D) flattened row-major (`W[i, j] -> i * D + j`), then the bias (K).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.common import label_overlap

L2_EPS = 1e-6  # the reference L2Norm layer: h / (||h|| + 1e-6)


def l2_normalise(h: torch.Tensor) -> torch.Tensor:
    """The reference's L2Norm layer `h / (||h|| + 1e-6)` followed by its re-normalisation (unit rows)."""
    return F.normalize(h / (h.norm(dim=-1, keepdim=True) + L2_EPS), dim=-1)


def diag_ggn(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Batch-mean diagonal generalised Gauss-Newton of `Linear -> L2Norm` with identity output Hessian.

    `features` (B, D); `weight` (S, K, D) and `bias` (S, K), one parameter set per sample s.
    With h = W f + b, r = ||h|| + eps, n = h / r and stochman's Jacobian G = (I - n nᵀ) / r of the
    L2 layer, diag(GᵀG)_i = M_i = (1 - 2 n_i² + n_i² ||n||²) / r²; the entry of W[i, j] is M_i f_j²,
    that of b[i] is M_i. Returns (S, P), P = K·D + K, without forming any Jacobian.
    """
    h = torch.einsum("bd,skd->sbk", features, weight) + bias[:, None, :]
    r = h.norm(dim=-1, keepdim=True) + L2_EPS
    n2 = (h / r).square()
    m = (1 - 2 * n2 + n2 * n2.sum(dim=-1, keepdim=True)) / r.square()  # (S, B, K)
    weight_part = torch.einsum("sbk,bd->skd", m, features.square()) / features.shape[0]
    return torch.cat([weight_part.flatten(1), m.mean(dim=1)], dim=1)


def posterior_scale(hessian: torch.Tensor, prior_precision: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    """σ = 1 / (sqrt(relu(H) · scale + prior precision) + 1e-6), the reference DiagLaplace's posterior std."""
    return 1.0 / ((torch.relu(hessian) * scale + prior_precision).sqrt() + 1e-6)


def count_triplets(labels: torch.Tensor) -> torch.Tensor:
    """The reference miner's triplet count Σ_a P_a · N_a without enumerating the B³ triplets.

    m = L Lᵀ (shared-label counts); p is a positive of a where m[a, p] != 0 and n a negative where
    m[a, n] != 1 (the reference's `m XOR 1` on uint8: pairs sharing 2+ labels are both). Self pairs count.
    """
    shared = label_overlap(labels).round().long()
    return ((shared != 0).sum(dim=1) * (shared != 1).sum(dim=1)).sum()


def hessian_scale(n_triplets: int, num_train: int, max_pairs: int) -> float:
    """The reference `laplace.scale` factor N² / b with b = min(n_triplets, max_pairs)."""
    return num_train ** 2 / min(n_triplets, max_pairs)


class LaplaceHashHead(nn.Module):
    """`Linear(D, K) -> L2Norm` with a diagonal Gaussian posterior N(μ, σ²) over its K·D + K parameters.

    μ are the Linear's parameters (trained by BertAdam); the precision `hessian` (P,) is a buffer, so it
    is checkpointed with the model. Samples θ_s = μ + stopgrad(σ ⊙ ε_s): gradients at θ_s reach μ.
    """

    def __init__(self, in_dim: int, bits: int, hessian_init: float):
        super().__init__()
        self.fc = nn.Linear(in_dim, bits)  # PyTorch default init, as the reference
        self.register_buffer("hessian", torch.full((bits * in_dim + bits,), float(hessian_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm output at the mean weights μ."""
        return l2_normalise(self.fc(x))

    def sample_weights(self, n_samples: int, prior_precision: float = 1.0, scale: float = 1.0,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n weight sets (S, K, D) and biases (S, K) drawn from the posterior (`generator`, else torch's global RNG)."""
        sigma = posterior_scale(self.hessian, prior_precision, scale)
        noise = sigma * torch.randn(n_samples, sigma.numel(), device=sigma.device, dtype=sigma.dtype,
                                    generator=generator)
        split = self.fc.weight.numel()
        weight = self.fc.weight + noise[:, :split].view(n_samples, *self.fc.weight.shape)
        return weight, self.fc.bias + noise[:, split:]

    @staticmethod
    def sampled_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Unit-norm outputs (S, B, K) of the head at each sampled parameter set."""
        return l2_normalise(torch.einsum("bd,skd->sbk", x, weight) + bias[:, None, :])

    @torch.no_grad()
    def update_hessian(self, curvature: torch.Tensor, memory: float) -> None:
        """H <- memory · H + relu(curvature), the reference's online precision update."""
        self.hessian.copy_(memory * self.hessian + torch.relu(curvature))
