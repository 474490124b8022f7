"""Time mAP over the whole ranking in all four directions at NUS-WIDE scale, against the repos' per-query loop.

    python -m bench.eval_speed [--queries 2100] [--database 193734] [--bits 64] [--loop-queries 100]

The loop is the reference repos' algorithm (per query: distance row by matmul, sort, ranks of the
relevant items, mean of t / p_t) with a stable sort so both rank ties identically; it runs on the
first --loop-queries queries of every direction and its time is extrapolated to all queries. Both
results are printed with their difference on those queries.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from utils.metrics import DIRECTIONS, mean_average_precision


def synthetic_codes(queries: int, database: int, bits: int, classes: int, seed: int = 0):
    """Class-structured noisy codes and multi-hot labels (like trained codes: many near ties, R > 0 mostly)."""
    rng = np.random.default_rng(seed)
    centers = rng.choice([-1.0, 1.0], size=(classes, bits))

    def draw(n):
        labels = (rng.random((n, classes)) < 1.5 / classes).astype(np.float32)
        labels[np.arange(n), rng.integers(classes, size=n)] = 1
        image = np.sign(labels @ centers + rng.normal(0, 1.5, (n, bits))).astype(np.float32)
        text = np.sign(labels @ centers + rng.normal(0, 1.5, (n, bits))).astype(np.float32)
        image[image == 0] = 1
        text[text == 0] = 1
        return image, text, labels

    q_img, q_txt, q_l = draw(queries)
    r_img, r_txt, r_l = draw(database)
    return {"q_img": q_img, "q_txt": q_txt, "r_img": r_img, "r_txt": r_txt, "q_l": q_l, "r_l": r_l}


def reference_loop_map(q, r, ql, rl) -> float:
    """The repos' calc_map_k loop (torch, CPU), with a stable sort (float64, so both results are exact)."""
    q, r, ql, rl = (torch.from_numpy(a).double() for a in (q, r, ql, rl))
    bits = q.shape[1]
    total = 0.0
    for i in range(q.shape[0]):
        relevant = ((ql[i] @ rl.T) > 0).double()
        count = relevant.sum()
        if count == 0:
            continue
        hamming = 0.5 * (bits - q[i] @ r.T)
        order = torch.sort(hamming, stable=True).indices
        ranked = relevant[order]
        positions = torch.nonzero(ranked).squeeze(1).double() + 1.0
        total += (torch.arange(1, int(count) + 1).double() / positions).mean().item()
    return total / q.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=2100)
    parser.add_argument("--database", type=int, default=193734)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--loop-queries", type=int, default=100)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}")
    codes = synthetic_codes(args.queries, args.database, args.bits, args.classes)
    tiny = synthetic_codes(8, 64, args.bits, args.classes, seed=1)
    mean_average_precision(tiny["q_img"], tiny["r_txt"], tiny["q_l"], tiny["r_l"])  # JIT compile outside the timing
    print(f"{args.queries} queries x {args.database} database items x {args.bits} bits, 4 directions")
    start = time.perf_counter()
    fast = {name: mean_average_precision(codes[q], codes[r], codes["q_l"], codes["r_l"])
            for name, (q, r) in DIRECTIONS.items()}
    fast_time = time.perf_counter() - start
    n = min(args.loop_queries, args.queries)
    loop_time, worst = 0.0, 0.0
    for name, (q, r) in DIRECTIONS.items():
        start = time.perf_counter()
        slow = reference_loop_map(codes[q][:n], codes[r], codes["q_l"][:n], codes["r_l"])
        loop_time += time.perf_counter() - start
        same_subset = mean_average_precision(codes[q][:n], codes[r], codes["q_l"][:n], codes["r_l"])
        worst = max(worst, abs(same_subset - slow))
        print(f"  {name}: mAP {fast[name]:.6f} (first {n} queries: vectorised {same_subset:.12f}, "
              f"loop {slow:.12f})")
    loop_estimate = loop_time * args.queries / n
    print(f"vectorised, all 4 directions: {fast_time:.2f} s")
    print(f"per-query loop: {loop_time:.2f} s for {n} queries x 4 directions -> {loop_estimate:.1f} s estimated "
          f"for all {args.queries} queries")
    print(f"speed-up: {loop_estimate / fast_time:.0f}x; largest |difference| of mAP on the same queries: {worst:.2e}")


if __name__ == "__main__":
    main()
