"""Hamming-ranking retrieval metrics for cross-modal hashing (docs/evaluation.md).

Conventions (the same for every metric):

* Codes are ±1 (or 0/1, or bool): an entry > 0 is bit 1. Real-valued network outputs become codes
  with :func:`to_binary_codes` (0 maps to +1, never to 0).
* Relevance: a database item is relevant to a query when their multi-hot labels share at least one
  class; graded relevance (NDCG only) is the number of shared classes.
* Ranking: ascending Hamming distance; ties are broken by database position (a stable sort). Every
  metric also has a tie-aware form (the expectation over all orders within tied groups, He et al.,
  CVPR 2018) or comes from tie-free Hamming-radius buckets.
* A query with no relevant item has AP 0 and still counts in the mean (never NaN).

The engine scans each query once for per-distance bucket counts and once more in database order,
which gives every item's exact stable rank without sorting (numba, parallel over queries). All
metrics derive from that scan. `python -m utils.metrics CODES.mat` prints them for a codes file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numba
import numpy as np
import scipy.io as sio
from scipy.special import digamma

from utils.errors import UserError

# numba's default OpenMP threading layer leaves spinning threads that compete with PyTorch's own OpenMP
# pool: after the first evaluation every training step ran up to 20x slower (measured, 2 cores). The
# workqueue layer has no such threads. NUMBA_THREADING_LAYER in the environment still wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

DistanceFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
DIRECTIONS = {"i2t": ("q_img", "r_txt"), "t2i": ("q_txt", "r_img"), "i2i": ("q_img", "r_img"),
              "t2t": ("q_txt", "r_txt")}
DIRECTION_LABELS = {"i2t": "I->T", "t2i": "T->I", "i2i": "I->I", "t2t": "T->T"}
CODE_KEYS = ("q_img", "q_txt", "r_img", "r_txt", "q_l", "r_l")
MAP_K_VARIANTS = ("repo_first_k_relevant", "truncated", "truncated_skip_empty")


# ======================================================================== inputs
def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_binary_codes(x):
    """±1 codes from real-valued outputs: +1 where x >= 0, else -1 (keeps torch tensors as tensors)."""
    if hasattr(x, "detach"):
        import torch

        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype if x.is_floating_point() else torch.float32)
    return np.where(_numpy(x) >= 0, 1.0, -1.0).astype(np.float32)


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """Rows of booleans -> rows of uint64 words (little-endian bit order, zero padding)."""
    packed = np.packbits(bits.reshape(bits.shape[0], -1), axis=1, bitorder="little")
    pad = (-packed.shape[1]) % 8
    packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def _check_inputs(q_codes, r_codes, q_labels, r_labels) -> tuple[np.ndarray, ...]:
    q, r, ql, rl = (_numpy(a) for a in (q_codes, r_codes, q_labels, r_labels))
    if q.shape[1:] != r.shape[1:]:
        raise UserError(f"query codes {q.shape} and database codes {r.shape} differ in code shape")
    if ql.ndim != 2 or rl.ndim != 2 or ql.shape[1] != rl.shape[1]:
        raise UserError(f"labels must be (n, C) with the same C: got {ql.shape} and {rl.shape}")
    if len(q) != len(ql) or len(r) != len(rl):
        raise UserError(f"{len(q)} query codes but {len(ql)} query labels, or {len(r)} database codes but "
                        f"{len(rl)} database labels")
    return q, r, ql, rl


def hamming_distance(q_codes, r_codes) -> np.ndarray:
    """Integer Hamming distances (Q, N) between two sets of codes."""
    q = _numpy(q_codes).reshape(len(q_codes), -1) > 0
    r = _numpy(r_codes).reshape(len(r_codes), -1) > 0
    return (q[:, None, :] != r[None, :, :]).sum(axis=2)


# ======================================================================== the scan
@numba.njit(cache=True, inline="always")
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@numba.njit(cache=True, inline="always")
def _count(d, g, gain_value, counts, relevant, gains, gain_hist, with_gains):
    """Pass 1 for one item: bucket counts, relevant counts, and (for NDCG) gain sums and histogram."""
    counts[d] += 1
    if g > 0:
        relevant[d] += 1
    if with_gains:
        gain_hist[g] += 1
        gains[d] += gain_value[g]


@numba.njit(cache=True)
def _scan_row(dist, gain, levels, gain_value, ns, k_map, k_ndcg, discount, discount_cum,
              out_f, out_n, out_r, out_g, out_pn, row):
    """Every per-query statistic of one row ranked stably by position, in two passes over the database."""
    counts = np.zeros(levels, np.int64)
    relevant = np.zeros(levels, np.int64)
    gains = np.zeros(levels, np.float64)
    gain_hist = np.zeros(gain_value.shape[0], np.int64)
    for j in range(dist.shape[0]):
        _count(dist[j], gain[j], gain_value, counts, relevant, gains, gain_hist, k_ndcg > 0)
    _rank_row(dist, gain, counts, relevant, gains, gain_hist, levels, gain_value, ns, k_map, k_ndcg, discount,
              discount_cum, out_f, out_n, out_r, out_g, out_pn, row)


@numba.njit(cache=True)
def _rank_row(dist, gain, counts, relevant, gains, gain_hist, levels, gain_value, ns, k_map, k_ndcg, discount,
              discount_cum, out_f, out_n, out_r, out_g, out_pn, row):
    """Pass 2 and the summaries of one row, given its pass-1 counts.

    dist: distances (N,) in 0..levels-1; gain: shared label counts (N,); gain_value[g] = 2^g - 1;
    ns: sorted cut-offs for P@N; discount[p] = 1 / log2(p + 1), discount_cum its prefix sums.
    out_f[row] = [AP, AP repo-k sum, AP truncated sum, relevant in top k, R, DCG, DCG tie, IDCG].
    """
    n_items = dist.shape[0]
    extras = k_map >= 0 or k_ndcg > 0 or ns.shape[0] > 0  # else only AP and the buckets are needed
    start = np.zeros(levels, np.int64)
    rel_start = np.zeros(levels, np.int64)
    for d in range(1, levels):
        start[d] = start[d - 1] + counts[d - 1]
        rel_start[d] = rel_start[d - 1] + relevant[d - 1]
    total_relevant = rel_start[levels - 1] + relevant[levels - 1]
    first_k = min(k_map, total_relevant)
    seen = start.copy()  # next free rank - 1 in each bucket
    rel_seen = rel_start.copy()
    ap = 0.0
    ap_repo = 0.0
    ap_trunc = 0.0
    rel_top_k = 0
    dcg = 0.0
    hist = np.zeros(ns.shape[0] + 1, np.int64)
    for j in range(n_items):  # pass 2: exact stable ranks in database order
        d = dist[j]
        seen[d] += 1
        g = gain[j]
        if g > 0:
            rank = seen[d]
            rel_seen[d] += 1
            t = rel_seen[d]
            value = t / rank
            ap += value
            if extras:
                if t <= first_k:
                    ap_repo += value
                if rank <= k_map:
                    ap_trunc += value
                    rel_top_k += 1
                if rank <= k_ndcg:
                    dcg += gain_value[g] * discount[rank]
                if ns.shape[0] > 0:
                    hist[np.searchsorted(ns, rank)] += 1
    dcg_tie = 0.0  # each bucket spreads its mean gain over the ranks it occupies (cut at k_ndcg)
    for d in range(levels):
        if gains[d] > 0 and start[d] < k_ndcg:
            last = min(start[d] + counts[d], k_ndcg)
            dcg_tie += gains[d] / counts[d] * (discount_cum[last] - discount_cum[start[d]])
    idcg = 0.0
    position = 0
    for g in range(gain_value.shape[0] - 1, 0, -1):
        take = min(gain_hist[g], k_ndcg - position)
        if take <= 0:
            continue
        idcg += gain_value[g] * (discount_cum[position + take] - discount_cum[position])
        position += take
    out_f[row, 0] = ap / total_relevant if total_relevant > 0 else 0.0
    out_f[row, 1] = ap_repo
    out_f[row, 2] = ap_trunc
    out_f[row, 3] = rel_top_k
    out_f[row, 4] = total_relevant
    out_f[row, 5] = dcg
    out_f[row, 6] = dcg_tie
    out_f[row, 7] = idcg
    out_n[row] = counts
    out_r[row] = relevant
    out_g[row] = gains
    running = 0
    for m in range(ns.shape[0]):
        running += hist[m]
        out_pn[row, m] = running


@numba.njit(cache=True)
def _outputs(n_queries, levels, n_cuts):
    return (np.zeros((n_queries, 8)), np.zeros((n_queries, levels), np.int64),
            np.zeros((n_queries, levels), np.int64), np.zeros((n_queries, levels)),
            np.zeros((n_queries, n_cuts), np.int64))


@numba.njit(cache=True, parallel=True)
def _scan_hamming(q_words, r_words, q_labels, r_labels, levels, gain_value, ns, k_map, k_ndcg, discount,
                  discount_cum):
    n_queries, n_items = q_words.shape[0], r_words.shape[0]
    out_f, out_n, out_r, out_g, out_pn = _outputs(n_queries, levels, ns.shape[0])
    for i in numba.prange(n_queries):
        dist = np.empty(n_items, np.int16)
        gain = np.empty(n_items, np.int16)
        counts = np.zeros(levels, np.int64)
        relevant = np.zeros(levels, np.int64)
        gains = np.zeros(levels, np.float64)
        gain_hist = np.zeros(gain_value.shape[0], np.int64)
        for j in range(n_items):  # distances, shared labels and pass 1 in one sweep
            d = 0
            for w in range(q_words.shape[1]):
                d += _popcount(q_words[i, w] ^ r_words[j, w])
            g = 0
            for w in range(q_labels.shape[1]):
                g += _popcount(q_labels[i, w] & r_labels[j, w])
            dist[j] = d
            gain[j] = g
            _count(d, g, gain_value, counts, relevant, gains, gain_hist, k_ndcg > 0)
        _rank_row(dist, gain, counts, relevant, gains, gain_hist, levels, gain_value, ns, k_map, k_ndcg, discount,
                  discount_cum, out_f, out_n, out_r, out_g, out_pn, i)
    return out_f, out_n, out_r, out_g, out_pn


@numba.njit(cache=True, parallel=True)
def _scan_matrix(dist, gain, levels, gain_value, ns, k_map, k_ndcg, discount, discount_cum):
    out_f, out_n, out_r, out_g, out_pn = _outputs(dist.shape[0], levels, ns.shape[0])
    for i in numba.prange(dist.shape[0]):
        _scan_row(dist[i], gain[i], levels, gain_value, ns, k_map, k_ndcg, discount, discount_cum,
                  out_f, out_n, out_r, out_g, out_pn, i)
    return out_f, out_n, out_r, out_g, out_pn


@dataclass
class RankStats:
    """Per-query statistics of one retrieval direction (Q queries, distances 0..levels-1)."""

    ap: np.ndarray            # stable AP over the whole ranking
    ap_repo_sum: np.ndarray   # sum of t / p_t over the first min(k, R) relevant items
    ap_trunc_sum: np.ndarray  # sum of t / p_t over relevant items ranked <= k
    relevant_top_k: np.ndarray
    relevant: np.ndarray      # R per query
    dcg: np.ndarray
    dcg_tie: np.ndarray
    idcg: np.ndarray
    counts: np.ndarray        # (Q, levels) items per distance
    relevant_counts: np.ndarray  # (Q, levels) relevant items per distance
    gain_sums: np.ndarray     # (Q, levels) sum of 2^g - 1 per distance
    ns: np.ndarray            # cut-offs of precision_counts
    precision_counts: np.ndarray  # (Q, len(ns)) relevant items among the first N (stable)
    k_map: int
    k_ndcg: int


def rank_stats(q_codes, r_codes, q_labels, r_labels, distance: DistanceFn | None = None, k: int | None = None,
               ns=(), ndcg_k: int | None = None, chunk_size: int = 256) -> RankStats:
    """Scan every query of one direction once; all metrics below are computed from the result.

    `k` (mAP@k), `ns` (P@N cut-offs) and `ndcg_k` (None: whole list, 0: skip NDCG) choose the
    statistics gathered beyond AP and the per-distance buckets.

    `distance(q_chunk, r_codes)` may replace the Hamming distance: it must return integers in
    0..K, K = codes.shape[-1] (e.g. for multi-embedding codes); the scan then runs on chunks of
    `chunk_size` queries.
    """
    q, r, ql, rl = _check_inputs(q_codes, r_codes, q_labels, r_labels)
    n_items = len(r)
    levels = q.shape[-1] + 1
    ns = np.asarray(sorted({int(n) for n in ns if 0 < n}), dtype=np.int64)
    k_map = -1 if k is None else int(k)  # -1: no mAP@k statistics
    k_ndcg = n_items if ndcg_k is None else min(int(ndcg_k), n_items)
    discount = np.concatenate([[0.0], 1.0 / np.log2(np.arange(2, n_items + 2))])
    discount_cum = np.cumsum(discount)
    gain_value = 2.0 ** np.arange(ql.shape[1] + 1) - 1.0
    tables = (levels, gain_value, ns, k_map, k_ndcg, discount, discount_cum)
    if distance is None:
        words = _pack_bits(np.concatenate([q > 0, r > 0]).reshape(len(q) + n_items, -1))
        labels = _pack_bits(np.concatenate([ql > 0, rl > 0]))
        out = _scan_hamming(words[: len(q)], words[len(q):], labels[: len(q)], labels[len(q):], *tables)
    else:
        parts = []
        for begin in range(0, len(q), chunk_size):
            dist = np.asarray(distance(q[begin:begin + chunk_size], r)).astype(np.int16)
            if dist.min(initial=0) < 0 or dist.max(initial=0) >= levels:
                raise ValueError(f"custom distances must lie in 0..{levels - 1}")
            shared = ql[begin:begin + chunk_size].astype(np.float32) @ rl.T.astype(np.float32)
            parts.append(_scan_matrix(np.ascontiguousarray(dist), np.rint(shared).astype(np.int16), *tables))
        out = tuple(np.concatenate(p) for p in zip(*parts))
    out_f, counts, relevant_counts, gain_sums, precision_counts = out
    return RankStats(ap=out_f[:, 0], ap_repo_sum=out_f[:, 1], ap_trunc_sum=out_f[:, 2], relevant_top_k=out_f[:, 3],
                     relevant=out_f[:, 4], dcg=out_f[:, 5], dcg_tie=out_f[:, 6], idcg=out_f[:, 7], counts=counts,
                     relevant_counts=relevant_counts, gain_sums=gain_sums, ns=ns, precision_counts=precision_counts,
                     k_map=k_map, k_ndcg=k_ndcg)


# ======================================================================== metrics from the scan
def _harmonic(n: np.ndarray) -> np.ndarray:
    """H_n = ψ(n + 1) + γ, elementwise, float64 (H_0 = 0)."""
    return digamma(np.asarray(n, dtype=np.float64) + 1.0) + np.euler_gamma


def _bucket_prefix(stats: RankStats) -> tuple[np.ndarray, np.ndarray]:
    n = stats.counts.astype(np.float64)
    r = stats.relevant_counts.astype(np.float64)
    return np.cumsum(n, axis=1) - n, np.cumsum(r, axis=1) - r


def ap_from_stats(stats: RankStats, kind: str = "stable") -> np.ndarray:
    """Per-query AP: "stable" (ties by position), "tie" (expected over tie orders), "optimistic"
    (relevant items first within ties) or "pessimistic" (relevant last)."""
    if kind == "stable":
        return stats.ap
    n = stats.counts.astype(np.float64)
    r = stats.relevant_counts.astype(np.float64)
    before, rel_before = _bucket_prefix(stats)
    if kind == "tie":
        # Σ_{j=1..n} (a + b(j-1)) / (c + j) = n b + (a - b - b c)(H_{c+n} - H_c), a = R_<d + 1, c = N_<d
        b = np.where(n > 1, (r - 1) / np.maximum(n - 1, 1), 0.0)
        a = rel_before + 1
        inner = n * b + (a - b - b * before) * (_harmonic(before + n) - _harmonic(before))
        terms = np.where(r > 0, r * inner / np.maximum(n, 1), 0.0)
    elif kind in ("optimistic", "pessimistic"):
        # Σ_{t=1..r} (R_<d + t) / (c + t) = r + (R_<d - c)(H_{c+r} - H_c), c = N_<d (+ n - r if pessimistic)
        c = before if kind == "optimistic" else before + n - r
        terms = r + (rel_before - c) * (_harmonic(c + r) - _harmonic(c))
    else:
        raise ValueError(f"unknown AP kind {kind!r}")
    total = r.sum(axis=1)
    return np.where(total > 0, terms.sum(axis=1) / np.maximum(total, 1), 0.0)


def map_at_k_from_stats(stats: RankStats, variant: str = "repo_first_k_relevant") -> float:
    """mAP@k of the three definitions in docs/evaluation.md (Metrics, mAP@K; k fixed when the stats were made)."""
    if variant == "repo_first_k_relevant":
        first = np.minimum(stats.k_map, stats.relevant)
        return float(np.where(first > 0, stats.ap_repo_sum / np.maximum(first, 1), 0.0).mean())
    per_query = np.where(stats.relevant_top_k > 0, stats.ap_trunc_sum / np.maximum(stats.relevant_top_k, 1), 0.0)
    if variant == "truncated":
        return float(per_query.mean())
    if variant == "truncated_skip_empty":
        kept = stats.relevant_top_k > 0
        return float(per_query[kept].mean()) if kept.any() else 0.0
    raise ValueError(f"unknown mAP@k variant {variant!r}; choose one of {MAP_K_VARIANTS}")


def precision_at_n_from_stats(stats: RankStats, tie_aware: bool = False) -> np.ndarray:
    """Mean P@N over all queries for each N of `stats.ns`."""
    if not tie_aware:
        return (stats.precision_counts / stats.ns).mean(axis=0)
    n = stats.counts.astype(np.float64)
    r = stats.relevant_counts.astype(np.float64)
    before, _ = _bucket_prefix(stats)
    values = []
    for cut in stats.ns:  # each bucket contributes r_d times the fraction of it inside the first `cut`
        inside = np.clip(cut - before, 0, n) / np.maximum(n, 1)
        values.append(((r * inside).sum(axis=1) / cut).mean())
    return np.array(values)


def pr_from_stats(stats: RankStats, aggregate: str = "macro") -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of the Hamming ball of radius 0..K.

    macro: mean over queries, a query retrieving nothing has precision 0 at that radius and a query
    with no relevant item has recall 0; micro: ratios of the sums over all queries.
    """
    retrieved = np.cumsum(stats.counts, axis=1).astype(np.float64)
    hits = np.cumsum(stats.relevant_counts, axis=1).astype(np.float64)
    relevant = stats.relevant[:, None]
    if aggregate == "macro":
        precision = np.where(retrieved > 0, hits / np.maximum(retrieved, 1), 0.0).mean(axis=0)
        recall = np.where(relevant > 0, hits / np.maximum(relevant, 1), 0.0).mean(axis=0)
    elif aggregate == "micro":
        precision = hits.sum(0) / np.maximum(retrieved.sum(0), 1)
        recall = hits.sum(0) / max(relevant.sum(), 1)
    else:
        raise ValueError("aggregate must be 'macro' or 'micro'")
    return precision, recall


def ndcg_from_stats(stats: RankStats, tie_aware: bool = False) -> float:
    """Mean NDCG@k (k fixed when the stats were made); a query with IDCG 0 contributes 0."""
    dcg = stats.dcg_tie if tie_aware else stats.dcg
    return float(np.where(stats.idcg > 0, dcg / np.where(stats.idcg > 0, stats.idcg, 1), 0.0).mean())


# ======================================================================== one-call metrics
def mean_average_precision(q_codes, r_codes, q_labels, r_labels, k: int | None = None,
                           variant: str = "repo_first_k_relevant", distance: DistanceFn | None = None) -> float:
    """mAP over the whole ranking (k None) or mAP@k of the given variant."""
    stats = rank_stats(q_codes, r_codes, q_labels, r_labels, distance=distance, k=k, ndcg_k=0)
    return float(stats.ap.mean()) if k is None else map_at_k_from_stats(stats, variant)


def tie_aware_map(q_codes, r_codes, q_labels, r_labels, distance: DistanceFn | None = None) -> float:
    """Expected mAP over all orders of tied items."""
    return float(ap_from_stats(rank_stats(q_codes, r_codes, q_labels, r_labels, distance), "tie").mean())


def map_bounds(q_codes, r_codes, q_labels, r_labels, distance: DistanceFn | None = None) -> tuple[float, float]:
    """(optimistic, pessimistic) mAP: relevant items first / last within tied groups."""
    stats = rank_stats(q_codes, r_codes, q_labels, r_labels, distance)
    return float(ap_from_stats(stats, "optimistic").mean()), float(ap_from_stats(stats, "pessimistic").mean())


def precision_at_n(q_codes, r_codes, q_labels, r_labels, ns, tie_aware: bool = False,
                   distance: DistanceFn | None = None) -> np.ndarray:
    """Mean precision among the first N items, for each N in `ns` (returned in ascending N)."""
    stats = rank_stats(q_codes, r_codes, q_labels, r_labels, distance, ns=ns)
    return precision_at_n_from_stats(stats, tie_aware)


def topn_grid(database_size: int, num_retrieval: int = 10_000, points: int = 50) -> np.ndarray:
    """DCHMT's top-N grid: N = int(min(num_retrieval, database) * f) for f = 0.02, 0.04, ..., 1."""
    top = min(num_retrieval, database_size)
    return np.unique(np.maximum((top * np.arange(1, points + 1) / points).astype(int), 1))


def topn_precision_curve(q_codes, r_codes, q_labels, r_labels, ns=None,
                         distance: DistanceFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N values, mean P@N): the top-N precision curve, by default on DCHMT's grid."""
    ns = topn_grid(len(r_codes)) if ns is None else np.asarray(sorted(set(int(n) for n in ns)))
    return ns, precision_at_n(q_codes, r_codes, q_labels, r_labels, ns, distance=distance)


def pr_curve_by_radius(q_codes, r_codes, q_labels, r_labels, aggregate: str = "macro",
                       distance: DistanceFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) of the Hamming ball of each radius 0..K (see :func:`pr_from_stats`)."""
    return pr_from_stats(rank_stats(q_codes, r_codes, q_labels, r_labels, distance), aggregate)


def ndcg_at_k(q_codes, r_codes, q_labels, r_labels, k: int | None = None, tie_aware: bool = False,
              distance: DistanceFn | None = None) -> float:
    """Mean NDCG@k with gains 2^g − 1 (g shared labels) and discount 1/log2(rank + 1); k None = whole list."""
    stats = rank_stats(q_codes, r_codes, q_labels, r_labels, distance, ndcg_k=k)
    return ndcg_from_stats(stats, tie_aware)


def direction_metrics(q_codes, r_codes, q_labels, r_labels, distance: DistanceFn | None = None,
                      map_k: int | None = None, map_k_variant: str = "repo_first_k_relevant",
                      ns=(1, 10, 100, 1000), ndcg_k: int = 1000) -> dict[str, float]:
    """Every scalar metric of one direction from a single scan."""
    stats = rank_stats(q_codes, r_codes, q_labels, r_labels, distance, k=map_k, ns=ns, ndcg_k=ndcg_k)
    precision, recall = pr_from_stats(stats, "macro")
    result = {"mAP": float(stats.ap.mean()), "mAP_tie": float(ap_from_stats(stats, "tie").mean()),
              "mAP_optimistic": float(ap_from_stats(stats, "optimistic").mean()),
              "mAP_pessimistic": float(ap_from_stats(stats, "pessimistic").mean()),
              "P@H<=2": float(precision[min(2, len(precision) - 1)]), "R@H<=2": float(recall[min(2, len(recall) - 1)]),
              f"NDCG@{stats.k_ndcg}": ndcg_from_stats(stats), f"NDCG_tie@{stats.k_ndcg}": ndcg_from_stats(stats, True)}
    for n, value in zip(stats.ns, precision_at_n_from_stats(stats)):
        result[f"P@{n}"] = float(value)
    if map_k is not None:
        result[f"mAP@{map_k}"] = map_at_k_from_stats(stats, map_k_variant)
    return result


def evaluate_codes(q_img, q_txt, r_img, r_txt, q_labels, r_labels, distance: DistanceFn | None = None,
                   map_k: int | None = None, map_k_variant: str = "repo_first_k_relevant") -> dict[str, dict]:
    """Metrics of all four directions: {"i2t", "t2i", "i2i", "t2t"} -> {"mAP", "mAP_tie", ...}."""
    codes = {"q_img": q_img, "q_txt": q_txt, "r_img": r_img, "r_txt": r_txt}
    return {name: direction_metrics(codes[q], codes[r], q_labels, r_labels, distance, map_k, map_k_variant)
            for name, (q, r) in DIRECTIONS.items()}


def chance_map(query_labels, database_labels, chunk: int = 1024) -> float:
    """mAP of a random ranking: the mean over queries of the fraction of relevant database items."""
    query_labels, database_labels = _numpy(query_labels), _numpy(database_labels)
    fractions = [((query_labels[start:start + chunk] @ database_labels.T) > 0).mean(axis=1)
                 for start in range(0, len(query_labels), chunk)]
    return float(np.concatenate(fractions).mean())


# ======================================================================== codes files and CLI
def load_codes_file(path: str | Path) -> dict[str, np.ndarray]:
    """The six arrays of a codes .mat (ours or a reference repo's), with shapes checked."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"codes file not found: {path}")
    try:
        content = sio.loadmat(str(path))
    except Exception as exc:
        raise UserError(f"cannot read {path}: {exc} (expected a .mat codes file)") from None
    missing = [k for k in CODE_KEYS if k not in content]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)} (a codes file holds {' '.join(CODE_KEYS)})")
    not_numeric = [k for k in CODE_KEYS if np.asarray(content[k]).dtype.kind not in "biuf"]
    if not_numeric:
        kinds = ", ".join(f"{k} ({np.asarray(content[k]).dtype})" for k in not_numeric)
        raise UserError(f"{path}: {kinds} must be numeric arrays (codes of +-1 or 0/1, labels of 0/1)")
    codes = {k: np.asarray(content[k], dtype=np.float32) for k in CODE_KEYS}
    pairs = (("q_img", "q_txt"), ("r_img", "r_txt"))
    for a, b in pairs:
        if codes[a].shape != codes[b].shape:
            raise UserError(f"{path}: {a} {codes[a].shape} and {b} {codes[b].shape} differ")
    _check_inputs(codes["q_img"], codes["r_img"], codes["q_l"], codes["r_l"])
    return codes


def _format_table(results: dict[str, dict[str, float]]) -> str:
    names = list(next(iter(results.values())))
    width = max(len(n) for n in names) + 2
    lines = [" " * width + "".join(f"{DIRECTION_LABELS[d]:>10}" for d in results)]
    for name in names:
        lines.append(f"{name:<{width}}" + "".join(f"{results[d][name]:>10.4f}" for d in results))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.metrics",
                                     description="Recompute every retrieval metric from a codes .mat file.")
    parser.add_argument("codes", help="file with q_img q_txt r_img r_txt q_l r_l")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--map-k", type=int, default=None, help="also mAP@K (all three definitions)")
    args = parser.parse_args(argv)
    try:
        codes = load_codes_file(args.codes)
        results = evaluate_codes(codes["q_img"], codes["q_txt"], codes["r_img"], codes["r_txt"], codes["q_l"],
                                 codes["r_l"], map_k=args.map_k)
        if args.map_k is not None:
            for name, (q, r) in DIRECTIONS.items():
                stats = rank_stats(codes[q], codes[r], codes["q_l"], codes["r_l"], k=args.map_k)
                for variant in MAP_K_VARIANTS[1:]:
                    results[name][f"mAP@{args.map_k}_{variant}"] = map_at_k_from_stats(stats, variant)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2) if args.json else _format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
