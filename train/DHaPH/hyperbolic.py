"""The Poincaré-ball operations DHaPH uses (curvature −c; hyptorch's definitions; README.md, section Model)."""
from __future__ import annotations

import torch
from torch import nn

NORM_MIN = 1e-5
ARTANH_LIMIT = 1 - 1e-5


def clip_norm(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Feature clipping before the exponential map: x · min(1, r / (‖x‖ + 1e-5))."""
    return x * (radius / (x.norm(dim=-1, keepdim=True) + 1e-5)).clamp(max=1)


def expmap0(u: torch.Tensor, c: float) -> torch.Tensor:
    """Exponential map at the origin: tanh(√c‖u‖) u / (√c‖u‖), ‖u‖ ≥ 1e-5, tanh argument clamped to ±15."""
    sqrt_c = c ** 0.5
    norm = u.norm(dim=-1, keepdim=True).clamp(min=NORM_MIN)
    return (sqrt_c * norm).clamp(-15, 15).tanh() * u / (sqrt_c * norm)


def project(x: torch.Tensor, c: float, eps: float = 1e-3) -> torch.Tensor:
    """Pull points with ‖x‖ > (1 − eps)/√c back to that norm (inside the ball)."""
    norm = x.norm(dim=-1, keepdim=True).clamp(min=NORM_MIN)
    max_norm = (1 - eps) / c ** 0.5
    return torch.where(norm > max_norm, x / norm * max_norm, x)


class RiemannianGradient(torch.autograd.Function):
    """Identity forward; backward scales the gradient by the inverse metric (1 − c‖x‖²)² / 4 at the output x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, c: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.c = c
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * (1 - ctx.c * x.square().sum(dim=-1, keepdim=True)).square() / 4, None


class Artanh(torch.autograd.Function):
    """artanh with the input clamped to ±(1 − 1e-5); the backward 1/(1 − z²) uses the clamped z (no zeroing)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        z = z.clamp(-ARTANH_LIMIT, ARTANH_LIMIT)
        ctx.save_for_backward(z)
        return 0.5 * (torch.log1p(z) - torch.log1p(-z))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        return grad / (1 - z.square())


class ToPoincare(nn.Module):
    """Euclidean features -> Poincaré ball: clip to radius `clip_r`, expmap0, project, Riemannian gradient."""

    def __init__(self, c: float = 0.1, clip_r: float = 2.3):
        super().__init__()
        self.c = c
        self.clip_r = clip_r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RiemannianGradient.apply(project(expmap0(clip_norm(x, self.clip_r), self.c), self.c), self.c)

    def extra_repr(self) -> str:
        return f"c={self.c}, clip_r={self.clip_r}"


def poincare_distance(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """Pairwise distances (N, M) = (2/√c) artanh(√c ‖(−x_i) ⊕ y_j‖), with the reference's +1e-5 in the Möbius
    denominator.

    The reference materialises the (N, M, K) Möbius sums. Their norm has the closed form
    ‖(−x) ⊕ y‖ = ‖x − y‖ · √D / (D + 1e-5), D = 1 − 2c⟨x,y⟩ + c²‖x‖²‖y‖²
    (the numerator's squared norm is ‖x − y‖²·D), so only (N, M) matrices are built. ‖x − y‖ is computed without
    the Gram expansion: no cancellation for close points, d(x, x) = 0 and a zero gradient there.
    """
    with torch.autocast(x.device.type, enabled=False):
        dtype = torch.promote_types(x.dtype, torch.float32)  # half precision -> float32, float64 stays
        x, y = x.to(dtype), y.to(dtype)
        inner = x @ y.T
        x2, y2 = x.square().sum(dim=1, keepdim=True), y.square().sum(dim=1, keepdim=True)
        d = 1 - 2 * c * inner + c ** 2 * x2 * y2.T
        norm = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist") * d.sqrt() / (d + 1e-5)
        return 2 / c ** 0.5 * Artanh.apply(c ** 0.5 * norm)
