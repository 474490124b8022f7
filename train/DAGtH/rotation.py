"""The Householder rotation fitted after training to move the codes towards hypercube vertices (reconstruction).

README.md, sections Model and Loss. H = (I − 2v_1v_1ᵀ)(I − 2v_2v_2ᵀ)…(I − 2v_Kv_Kᵀ) with v_i the
normalised columns of a free K x K matrix W (init I, so H = −I at the start). The reference builds the product
with the blocked FastH algorithm; here it is the equivalent compact WY form
H = I − V T⁻¹ Vᵀ, T = ½I + strict_upper(VᵀV) (one triangular solve, exactly orthogonal for any W, any K).
Quantization loss (the reference `bit_var_loss`): mean σ(u)(1 − σ(u)) over the entries of the row-normalised
rotated codes u, for images and texts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HouseholderRotation(nn.Module):
    """A K x K orthogonal matrix parametrised as a product of K Householder reflections."""

    def __init__(self, bits: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(bits))

    def matrix(self) -> torch.Tensor:
        """H (K, K), rotating column vectors."""
        v = self.weight / self.weight.norm(dim=0, keepdim=True)
        eye = torch.eye(len(v), dtype=v.dtype, device=v.device)
        t = (v.T @ v).triu(1) + eye / 2
        return eye - v @ torch.linalg.solve_triangular(t, v.T, upper=True)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Rows rotated: codes Hᵀ."""
        return codes @ self.matrix().T

    @torch.no_grad()
    def reset(self) -> None:
        """Back to W = I (H = −I)."""
        self.weight.copy_(torch.eye(len(self.weight)))


def bit_variance(u: torch.Tensor) -> torch.Tensor:
    """mean σ(u)(1 − σ(u)): 0.25 at 0, smaller as |u| grows."""
    s = torch.sigmoid(u)
    return (s * (1 - s)).mean()


def quantization_loss(rotation: HouseholderRotation, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """L_q(u_I) + L_q(u_T) with u = row-normalise(h Hᵀ)."""
    return (bit_variance(F.normalize(rotation(image), dim=1)) + bit_variance(F.normalize(rotation(text), dim=1)))


def fit_rotation(rotation: HouseholderRotation, image: torch.Tensor, text: torch.Tensor, steps: int,
                 lr: float) -> tuple[float, float]:
    """Full-batch Adam on L_q over frozen codes, from W = I; only W changes. Returns L_q before and after."""
    rotation.reset()
    image, text = image.detach().float(), text.detach().float()
    optimizer = torch.optim.Adam(rotation.parameters(), lr=lr)
    with torch.no_grad():
        before = quantization_loss(rotation, image, text).item()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = quantization_loss(rotation, image, text)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = quantization_loss(rotation, image, text).item()
    return before, after
