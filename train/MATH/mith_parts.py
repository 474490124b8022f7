"""Pieces MATH takes unchanged from MITH (same formulas, same initialisation).

A method folder may not import another method's folder, so these are copies of `GlobalConceptLearning`,
`sinusoidal_positions` (MITH's model.py) and `bayesian_likelihood`, `info_nce` (MITH's loss.py). They are
candidates for shared code; once they live there, this module becomes an import of them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.heads import ResidualMLPs


class GlobalConceptLearning(nn.Module):
    """Residual MLPs, then K concept scores `tanh(Linear(D, K, bias=False)(x))`; returns (x, scores)."""

    def __init__(self, dim: int, bits: int, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.mlp = ResidualMLPs(dim, layers, dropout) if layers > 0 else nn.Identity()
        self.concepts = nn.Linear(dim, bits, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.mlp(x)
        return x, torch.tanh(self.concepts(x))


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """Standard sin/cos position table (length, dim) with base 10000, divided by sqrt(dim)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table / dim ** 0.5


def bayesian_likelihood(bank: torch.Tensor, codes: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """Λ(U, h, S) = −mean(S ⊙ s − log(1 + e^s)), s = ½·clamp(U hᵀ, −64, 64).

    U (Ntrain, K) a memory bank, h (n, K) the batch's hashes, S (Ntrain, n) the label similarity.
    """
    s = 0.5 * (bank @ codes.T).clamp(-64, 64)
    return (F.softplus(s) - similarity * s).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric in-batch InfoNCE of unit vectors (n, D): ½[CE(a bᵀ/τ, diag) + CE(b aᵀ/τ, diag)]."""
    logits = a @ b.T / temperature
    targets = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
