"""The coding-theory threshold of proxy and centre losses: δ = 1 − 2d/K for K-bit codes and C classes.

d is the best known minimum distance of a binary linear [K, k] code with k = ceil(log2 C): C class codes can
be kept at least d bits apart, so a code's cosine to a class it does not have need not exceed δ. The table
holds the entries of the QinLab repositories' codetable.xlsx that 16-128 bit codes and up to 256 classes need.
"""
from __future__ import annotations

import math

from utils.config import require
from utils.errors import UserError

THRESHOLDS = {
    16: (-1, -0.25, 0, 0, 0, 0.25, 0.25, 0.375),
    32: (-1, -0.3125, -0.125, 0, 0, 0, 0.125, 0.1875),
    64: (-1, -0.3125, -0.125, -0.03125, 0, 0, 0, 0.09375),
    128: (-1, -0.328125, -0.125, -0.0625, 0, 0, 0, 0),
}


def code_threshold(bits: int, num_classes: int) -> float | None:
    """δ for `bits`-bit codes and `num_classes` proxies (k = ceil(log2 C)), or None outside the table."""
    k = max(1, math.ceil(math.log2(num_classes)))
    row = THRESHOLDS.get(bits)
    if row is None or k > len(row):
        return None
    return float(row[k - 1])


def check_threshold_bits(threshold: float | None, bits: int) -> None:
    """Config check: without an explicit `--threshold` the code length must be one the table holds."""
    require(threshold is not None or bits in THRESHOLDS, "output_dim", bits,
            f"has no coding-theory threshold (table: {'/'.join(map(str, THRESHOLDS))} bits); pass --threshold")


def resolve_threshold(threshold: float | None, bits: int, num_classes: int, method: str) -> float:
    """The explicit `--threshold`, else the table's δ; a one-line error naming `method` where the table has none."""
    if threshold is not None:
        return threshold
    delta = code_threshold(bits, num_classes)
    if delta is None:
        raise UserError(f"{method} has no coding-theory threshold for {bits} bits and {num_classes} classes (table: "
                        "16/32/64/128 bits, up to 256 classes); pass --threshold")
    return delta
