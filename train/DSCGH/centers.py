"""DSCGH's fixed hash centres (C, K) of ±1: generated (the CSQ initialisation) or read from a `.npy` file.

The reference ships `centers/CSQ_init_True_<dataset>_<C>_<K>_L2_alpha1.npy`. Where C <= 2K those files are exactly
the first C rows of [H_K; -H_K] (H_K the Sylvester Hadamard matrix), which `csq_centers` generates; where C > 2K
(COCO at 16 and 32 bits) they come from an optimisation on a trained classifier's weights that is not ported: read
the file with `read_centers` for those.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from utils.errors import UserError


def csq_centers(num_classes: int, bits: int, generator: torch.Generator) -> torch.Tensor:
    """(C, K) float32 ±1: rows of [H_K; -H_K] in order; beyond 2K classes, random balanced rows (K/2 entries -1)."""
    if bits < 2 or bits & (bits - 1):
        raise UserError(f"DSCGH's generated hash centres need a power-of-two code length, not {bits} "
                        f"(or read centres from a file)")
    hadamard = torch.from_numpy(scipy.linalg.hadamard(bits)).float()
    rows = torch.cat([hadamard, -hadamard])[:num_classes]
    extra = num_classes - len(rows)
    if extra <= 0:
        return rows
    negative = torch.rand(extra, bits, generator=generator).argsort(dim=1)[:, : bits // 2]
    random_rows = torch.ones(extra, bits).scatter_(1, negative, -1.0)
    return torch.cat([rows, random_rows])


def read_centers(path: str | Path, num_classes: int, bits: int) -> torch.Tensor:
    """(C, K) float32 centres from a `.npy` file, with their shape and ±1 entries checked."""
    path = Path(path)
    try:
        value = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read DSCGH hash centres {path}: {exc}; pass a .npy file of shape "
                        f"{num_classes}x{bits}") from None
    if value.shape != (num_classes, bits):
        raise UserError(f"{path} holds centres of shape {'x'.join(map(str, value.shape))}, this run needs "
                        f"{num_classes}x{bits} (classes x bits)")
    if not np.isin(value, (-1, 1)).all():
        raise UserError(f"{path}: hash centres must contain only +1 and -1")
    return torch.from_numpy(value.astype(np.float32))
