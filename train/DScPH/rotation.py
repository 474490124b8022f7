"""Orthogonal rotation R = H_1 H_2 ... H_K as a product of Householder reflections (the reference `HouseHolder`).

H_i = I - 2 v_i v_iᵀ with v_i the L2-normalised column i of a K×K parameter (identity at init, so R = -I).
The reference evaluates the product with the blocked FastH++ algorithm; here it is the equivalent compact
WY form (Joffrain et al. 2006): R = I - V T⁻¹ Vᵀ with T = ½ I + strictly_upper(VᵀV), one triangular solve.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HouseholderRotation(nn.Module):
    """`forward(x)` rotates each row of `x` (B, K): returns (R xᵀ)ᵀ = x Rᵀ."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))

    def matrix(self) -> torch.Tensor:
        """R (K, K), orthogonal for any weight."""
        v = F.normalize(self.weight, dim=0)
        gram = v.T @ v
        t = torch.triu(gram, diagonal=1) + 0.5 * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        # V T⁻¹ Vᵀ = V (T⁻¹ Vᵀ): solve T Y = Vᵀ
        y = torch.linalg.solve_triangular(t, v.T, upper=True)
        return torch.eye(len(gram), dtype=gram.dtype, device=gram.device) - v @ y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix().T.to(x.dtype)
