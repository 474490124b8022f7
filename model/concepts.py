"""Global concept learning: residual MLPs followed by K concept scores, the global hash of MITH-style heads."""
from __future__ import annotations

import torch
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
