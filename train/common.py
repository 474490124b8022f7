"""Building blocks that method folders share: label similarity, cosines, masked means, the memory-bank
likelihood, the symmetric InfoNCE, float32 regions, running means."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F


def label_similarity(labels: torch.Tensor, other: torch.Tensor | None = None, *,
                     diagonal: bool = True) -> torch.Tensor:
    """Boolean (N, M) matrix: True where row i of `labels` and row j of `other` share a class.

    `other` defaults to `labels` (the batch against itself); `diagonal=False` clears the diagonal
    (a sample is not its own positive), which needs a square result.
    """
    shares = label_overlap(labels, other) > 0
    if not diagonal:
        if shares.shape[0] != shares.shape[1]:
            raise ValueError(f"diagonal=False needs a square similarity, got {tuple(shares.shape)}")
        shares.fill_diagonal_(False)
    return shares


def label_overlap(labels: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
    """(N, M) number of classes row i of `labels` shares with row j of `other` (default: `labels`)."""
    other = labels if other is None else other
    return labels @ other.to(labels.dtype).T


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, M) cosine similarities between the rows of `a` and of `b`."""
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` is True; 0 where it is nowhere True."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def bayesian_likelihood(bank: torch.Tensor, codes: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """Λ(U, h, S) = −mean(S ⊙ s − log(1 + e^s)), s = ½·clamp(U hᵀ, −64, 64): the negative log-likelihood of the
    label similarities S (N, n) under the inner products of a memory bank U (N, K) and the batch's hashes h (n, K).
    """
    s = 0.5 * (bank @ codes.T).clamp(-64, 64)
    return (F.softplus(s) - similarity * s).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric in-batch InfoNCE of unit vectors (n, D): ½[CE(a bᵀ/τ, diag) + CE(b aᵀ/τ, diag)] (the CLIP loss)."""
    logits = a @ b.T / temperature
    targets = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Half precision becomes float32; float32 and float64 stay as they are."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


@contextlib.contextmanager
def float32_region(*tensors: torch.Tensor, device_type: str | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
    """Autocast off inside the block; yields `tensors` in at least float32.

        with float32_region(image, text) as (image, text):
            loss = terms_that_need_full_precision(image, text)

    Without tensors, name the `device_type` whose autocast is turned off.
    """
    if device_type is None:
        if not tensors:
            raise ValueError("float32_region needs tensors or a device_type")
        device_type = tensors[0].device.type
    with torch.autocast(device_type, enabled=False):
        yield tuple(at_least_float32(t) for t in tensors)


class RunningMean:
    """Mean of the values added since the last `reset()` (0.0 before the first)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, value: float, count: int = 1) -> None:
        self.total += float(value) * count
        self.count += count

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0
