"""Noisy training labels (`--label-noise RATE`), with the noise model of RSH's reference code (docs/label-noise.md).

A corrupted item loses one of its classes and gains one it lacked: floor(RATE * N) of the N items, drawn without
replacement, each get one present class (drawn uniformly) set to 0 and one absent class (drawn uniformly) set to 1.
`fixed` draws this once for the training split (the training labels of the whole run); `batch` draws it afresh
for every batch, as RSH's training loop does. Query and database labels never change.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch

from utils.errors import UserError

NOISE_MODES = ("fixed", "batch")


def swap_labels(labels: np.ndarray, rate: float, rng: np.random.RandomState | ModuleType) -> np.ndarray:
    """A copy of the 0/1 matrix `labels` with floor(rate * N) rows corrupted, each losing one present class and
    gaining one absent class (a row without classes only gains one, a row with all only loses one).

    `rng` is a legacy `RandomState` (or the `numpy.random` module, its global one); the draws are made in the
    reference's order: the rows (`choice` without replacement), then per row the class removed and the one added.
    """
    noisy = labels.copy()
    num_rows = labels.shape[0]
    for row in rng.choice(num_rows, int(num_rows * rate), replace=False):
        present, absent = np.flatnonzero(noisy[row] == 1), np.flatnonzero(noisy[row] == 0)
        if len(present):
            noisy[row, rng.choice(present)] = 0
        if len(absent):
            noisy[row, rng.choice(absent)] = 1
    return noisy


class BatchLabelNoise:
    """Fresh noise for each batch's labels (RSH's training loop), drawn from NumPy's global generator, which the
    trainer seeds and each loader worker gets seeded from the run's seed: reproducible for a seed."""

    def __init__(self, rate: float):
        self.rate = rate

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(swap_labels(labels.numpy(), self.rate, np.random))


@dataclass(frozen=True)
class LabelNoise:
    """`--label-noise RATE` with its mode and seed (None: the split's seed)."""

    rate: float
    mode: str = "fixed"
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise UserError(f"--label-noise {self.rate} is not a fraction of the training items; give a value in "
                            "[0, 1] (0 turns it off)")
        if self.mode not in NOISE_MODES:
            raise UserError(f"--label-noise-mode {self.mode!r} is unknown; choose one of {', '.join(NOISE_MODES)}")

    def fixed_labels(self, labels: np.ndarray, num_items: int, split_seed: int) -> np.ndarray:
        """The training split's labels under `fixed` noise (unchanged for rate 0 or the `batch` mode).

        The draws come from `RandomState(seed)` after it has drawn a permutation of the `num_items` items of the
        dataset: with the default seed this continues the stream of the split itself, as in the reference code,
        where the split and the noise share NumPy's global generator.
        """
        if self.rate == 0 or self.mode != "fixed":
            return labels
        rng = np.random.RandomState(split_seed if self.seed is None else self.seed)
        rng.permutation(num_items)
        return swap_labels(labels, self.rate, rng)

    def batch_noise(self) -> BatchLabelNoise | None:
        """What the training set applies to each batch (None unless the mode is `batch` and the rate positive)."""
        return BatchLabelNoise(self.rate) if self.rate > 0 and self.mode == "batch" else None
