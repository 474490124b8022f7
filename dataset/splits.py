"""Seeded query / train / retrieval splits, identical to the reference repos' `split_data`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.errors import UserError


@dataclass(frozen=True)
class Split:
    """Row indices of the three subsets; train is the first part of retrieval (train is inside the database)."""

    query: np.ndarray
    train: np.ndarray
    retrieval: np.ndarray


def split_rows(num_items: int, query_num: int, train_num: int, seed: int) -> Split:
    """`perm = RandomState(seed).permutation(N)`; query = perm[:q], train = perm[q:q+t], retrieval = perm[q:].

    This is NumPy's legacy global-RNG permutation used by QinLab, DCHMT, kalenforn (seed 1814)
    and MITH / CMCL (seed 1), so the same rows come out as in those repos for the same files.
    """
    if query_num <= 0 or train_num <= 0:
        raise UserError(f"--query-num and --train-num must be positive (got {query_num} and {train_num})")
    if query_num + train_num > num_items:
        raise UserError(f"--query-num {query_num} + --train-num {train_num} exceeds the {num_items} items of the "
                        "dataset; lower them")
    perm = np.random.RandomState(seed).permutation(num_items)
    return Split(query=perm[:query_num], train=perm[query_num:query_num + train_num], retrieval=perm[query_num:])
