"""DNPH's uniform-distribution constraint: Noise-As-Targets with a Hungarian one-to-one assignment.

README.md, section Loss (L_u). Every step draws random ±1 targets, matches each code of the
batch to one of them by minimising the summed (non-squared) Euclidean distance, and rewards the inner
product of each code with its target.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def random_signs(rows: int, bits: int) -> torch.Tensor:
    """(rows, bits) i.i.d. uniform ±1 in float64, drawn from NumPy's global generator (as the reference)."""
    return torch.from_numpy(np.random.randint(0, 2, size=(rows, bits)) * 2.0 - 1.0)


def assign_targets(codes: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The rows of `noise` reordered so that Σ_i ‖codes_i − target_i‖₂ is minimal (targets on codes' device).

    The cost is the plain (not squared) L2 distance in float64, solved on the CPU with SciPy's
    Hungarian algorithm; codes are detached (the targets are constants).
    """
    cost = torch.cdist(codes.detach().cpu().double(), noise.cpu().double(),
                       compute_mode="donot_use_mm_for_euclid_dist")
    _, columns = linear_sum_assignment(cost.numpy())
    return noise[torch.from_numpy(columns)].to(codes.device, codes.dtype)


def alignment(codes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean_i ⟨codes_i, targets_i⟩, the quantity the constraint maximises."""
    return (codes * targets).sum(dim=1).mean()
