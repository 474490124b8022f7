"""von Mises-Fisher pieces for DSSH: approximations of the normaliser and the mean, and reparameterised sampling.

A vMF distribution on the unit sphere S^{d-1} has mean direction μ and concentration κ. Sampling (Wood, 1994) draws
the component w = zᵀμ by rejection with a Beta((d-1)/2, (d-1)/2) proposal, a uniform tangent direction, and rotates
e₁ onto μ with a Householder reflection. The draws (the accepted Beta value e and the tangent normals v) are made
without gradient by `draw_noise`; `rsample` turns them into samples differentiably in μ and κ (through w(e; b(κ)) and
the reflection), as the reference does.
"""
from __future__ import annotations

import math

import torch

EPS = 1e-7  # the reference sampler's clamp (1 - w², the reflection axis norm)


def bessel_ratio(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """Approximation of I_{d/2}(κ) / I_{d/2-1}(κ), the mean resultant length of a vMF in d dimensions."""
    low, high = dim / 2 - 0.5, dim / 2 + 0.5
    squared = kappa ** 2
    return 0.5 * (kappa / (low + torch.sqrt(high ** 2 + squared)) + kappa / (low + torch.sqrt(low ** 2 + squared)))


def log_normalizer(kappa_squared: torch.Tensor, dim: int) -> torch.Tensor:
    """Approximation of log C_d(κ) (up to a constant), as a function of κ²."""
    low, high = dim / 2 - 0.5, dim / 2 + 0.5
    root_low, root_high = torch.sqrt(low ** 2 + kappa_squared), torch.sqrt(high ** 2 + kappa_squared)
    return 0.5 * (low * torch.log(low + root_low) - root_low + low * torch.log(low + root_high) - root_high)


def expected_direction(x: torch.Tensor) -> torch.Tensor:
    """E[z] of the vMF with μ = x / ‖x‖ and κ = ‖x‖, row-wise: μ · A_d(κ)."""
    kappa = x.norm(dim=1, keepdim=True)
    return x / kappa * bessel_ratio(kappa, x.shape[1])


def wood_b(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """Wood's b(κ); for κ in [10, 11] blended into its large-κ approximation (d-1) / (4κ), which is used above 11."""
    exact = (-2 * kappa + torch.sqrt(4 * kappa ** 2 + (dim - 1) ** 2)) / (dim - 1)
    approximate = (dim - 1) / (4 * kappa)
    blend = (kappa - 10).clamp(0, 1)
    return approximate * blend + exact * (1 - blend)


@torch.no_grad()
def draw_noise(kappa: torch.Tensor, dim: int, samples: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random draws for `samples` vMF samples per row: e (samples, B) accepted by Wood's test, v (samples, B, d-1).

    `kappa` is (B,) or (B, 1). Beta draws come from two Gamma draws (`torch._standard_gamma`, which accepts a
    generator); `generator=None` uses the global RNG.
    """
    kappa = kappa.reshape(1, -1).expand(samples, -1)
    b = wood_b(kappa, dim)
    a = (dim - 1 + 2 * kappa + torch.sqrt(4 * kappa ** 2 + (dim - 1) ** 2)) / 4
    d = 4 * a * b / (1 + b) - (dim - 1) * math.log(dim - 1)
    e = torch.empty_like(kappa)
    pending = torch.ones_like(kappa, dtype=torch.bool)
    while pending.any():
        count = int(pending.sum())
        shape = torch.full((2, count), (dim - 1) / 2, dtype=kappa.dtype, device=kappa.device)
        gamma = torch._standard_gamma(shape, generator=generator)
        candidate = gamma[0] / gamma.sum(dim=0)
        uniform = torch.rand(count, dtype=kappa.dtype, device=kappa.device, generator=generator)
        bb, aa, dd = b[pending], a[pending], d[pending]
        t = 2 * aa * bb / (1 - (1 - bb) * candidate)
        accept = (dim - 1) * torch.log(t) - t + dd > torch.log(uniform)
        rows = pending.nonzero(as_tuple=True)
        e[rows[0][accept], rows[1][accept]] = candidate[accept]
        pending[rows[0][accept], rows[1][accept]] = False
    v = torch.randn(samples, kappa.shape[1], dim - 1, dtype=kappa.dtype, device=kappa.device, generator=generator)
    return e, v


def rsample(mu: torch.Tensor, kappa: torch.Tensor, e: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(samples, B, d) vMF samples from unit `mu` (B, d), `kappa` (B, 1) and the draws of `draw_noise`."""
    b = wood_b(kappa, mu.shape[1]).squeeze(1)
    w = ((1 - (1 + b) * e) / (1 - (1 - b) * e)).unsqueeze(2)
    tangent = v / v.norm(dim=2, keepdim=True)
    x = torch.cat([w, torch.sqrt(torch.clamp(1 - w ** 2, min=EPS)) * tangent], dim=2)
    first_axis = torch.zeros_like(mu)
    first_axis[:, 0] = 1
    axis = first_axis - mu  # the reflection along e₁ - μ swaps e₁ and μ
    axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(EPS)
    return x - 2 * (x * axis).sum(dim=2, keepdim=True) * axis
