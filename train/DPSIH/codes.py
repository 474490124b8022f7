"""DPSIH's multi-embedding codes: n codes of K bits per item, stored as one ±1 row of n·K bits, and the
distance that ranks them: 0.5·(K − max_{k,k'} ⟨B_q[k], B_r[k']⟩), the Hamming distance of the closest pair."""
from __future__ import annotations

import numpy as np


class MultiCodeDistance:
    """Distance between rows of n concatenated K-bit ±1 codes: min over the n×n code pairs of their Hamming
    distance, an integer in 0..K (what `utils.metrics.rank_stats` expects from a custom distance).

    Works on database chunks of `chunk` items, so memory stays at (queries·n) × (chunk·n) floats.
    """

    def __init__(self, embeds: int, bits: int, chunk: int = 4096):
        self.embeds, self.bits, self.chunk = embeds, bits, chunk

    def __call__(self, queries: np.ndarray, database: np.ndarray) -> np.ndarray:
        n, k = self.embeds, self.bits
        if queries.shape[-1] != n * k or database.shape[-1] != n * k:
            raise ValueError(f"expected rows of {n}·{k} bits, got {queries.shape[-1]} and {database.shape[-1]}")
        q = np.where(queries > 0, 1.0, -1.0).astype(np.float32).reshape(-1, k)
        out = np.empty((len(queries), len(database)), dtype=np.int16)
        for start in range(0, len(database), self.chunk):
            part = database[start:start + self.chunk]
            r = np.where(part > 0, 1.0, -1.0).astype(np.float32).reshape(-1, k)
            best = (q @ r.T).reshape(len(queries), n, len(part), n).max(axis=(1, 3))
            out[:, start:start + len(part)] = np.rint((k - best) / 2).astype(np.int16)
        return out
