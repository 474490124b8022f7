"""Time top-k Hamming search over millions of random codes: FAISS exact, FAISS approximate, and the float way.

    python -m bench.search_speed [--sizes 1000000,10000000] [--queries 1000] [-k 100] [--bits 64]
                             [--float-queries 100] [--threads N] [--no-approximate]

For each database size: FAISS `IndexBinaryFlat` (exact, what `retrieval.index` builds by default), FAISS
`IndexBinaryHNSW` (what `--approximate` builds; recall@k against the exact result) and the reference repos' way
(±1 codes as float32, one matrix product per query batch, then a full sort of every row), all through the same
functions as the package where it has them. The float way runs on the first --float-queries queries and is
reported per query. Codes are uniform random bits: the worst case for an approximate index (no clusters) and
typical for a brute-force scan.

recall@k counts an approximate result as found when its distance is among the exact top-k distances (ties at the
k-th distance are interchangeable; exact search itself picks among them arbitrarily); `id recall` is the plain
overlap of item ids. The thread count follows OMP_NUM_THREADS unless --threads is given.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import faiss
import numpy as np
import torch

from retrieval.codes import HNSW_EF_SEARCH, build_index, search_index, unpack_codes


def float_way(queries: np.ndarray, database: torch.Tensor, bits: int, k: int, chunk: int = 8
              ) -> tuple[np.ndarray, np.ndarray]:
    """The references' ranking: Hamming distance as 0.5 * (bits - q @ r.T) in float32, then a full stable sort."""
    distances, positions = [], []
    for start in range(0, len(queries), chunk):
        hamming = 0.5 * (bits - torch.from_numpy(queries[start:start + chunk]) @ database.T)
        order = torch.sort(hamming, dim=1, stable=True).indices[:, :k]
        distances.append(torch.gather(hamming, 1, order).round().int().numpy())
        positions.append(order.numpy())
    return np.concatenate(distances), np.concatenate(positions)


def tie_aware_recall(found: np.ndarray, exact: np.ndarray, bits: int) -> float:
    """Mean over queries of |found distances ∩ exact distances| / k (as multisets)."""
    hits = [np.minimum(np.bincount(f[f >= 0], minlength=bits + 1), np.bincount(e, minlength=bits + 1)).sum()
            for f, e in zip(found, exact)]
    return float(np.mean(hits)) / exact.shape[1]


def id_recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(f, e)) for f, e in zip(found, exact)])) / exact.shape[1]


def timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - start, value


def bench_size(size: int, args: argparse.Namespace, rng: np.random.Generator) -> list[dict]:
    width = (args.bits + 7) // 8
    database = rng.integers(0, 256, size=(size, width), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(args.queries, width), dtype=np.uint8)
    rows = []
    build, index = timed(build_index, database, "flat")
    seconds, (exact_distances, exact_positions) = timed(search_index, index, queries, args.k)
    rows.append({"way": "FAISS exact (IndexBinaryFlat)", "build": build, "ms": 1e3 * seconds / args.queries,
                 "recall": 1.0, "id_recall": 1.0})
    del index
    if args.approximate:
        build, index = timed(build_index, database, "hnsw")
        seconds, (distances, positions) = timed(search_index, index, queries, args.k, args.ef_search)
        rows.append({"way": f"FAISS approximate (HNSW, efSearch {args.ef_search})", "build": build,
                     "ms": 1e3 * seconds / args.queries,
                     "recall": tie_aware_recall(distances, exact_distances, args.bits),
                     "id_recall": id_recall(positions, exact_positions)})
        del index
    few = min(args.float_queries, args.queries)
    build, floats = timed(lambda: torch.from_numpy(unpack_codes(database, args.bits)))
    float_queries = unpack_codes(queries[:few], args.bits)
    seconds, (distances, positions) = timed(float_way, float_queries, floats, args.bits, args.k)
    rows.append({"way": f"float matmul + sort ({few} queries)", "build": build, "ms": 1e3 * seconds / few,
                 "recall": tie_aware_recall(distances, exact_distances[:few], args.bits),
                 "id_recall": id_recall(positions, exact_positions[:few])})
    for row in rows:
        row["size"] = size
        row["speedup"] = rows[-1]["ms"] / row["ms"]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000", help="database sizes, comma-separated (default 1000000)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--float-queries", type=int, default=100, help="queries timed for the float way")
    parser.add_argument("--ef-search", type=int, default=HNSW_EF_SEARCH)
    parser.add_argument("--threads", type=int, default=None, help="FAISS and torch threads (default: OMP_NUM_THREADS)")
    parser.add_argument("--approximate", action=argparse.BooleanOptionalAction, default=True,
                        help="also build and time the HNSW index (its build is the slow part at 10 M)")
    args = parser.parse_args(argv)
    threads = args.threads or faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    torch.set_num_threads(threads)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {threads} thread(s), "
          f"FAISS {faiss.__version__}, torch {torch.__version__}; {args.bits}-bit random codes, "
          f"{args.queries} queries, top-{args.k}")
    rng = np.random.default_rng(0)
    header = f"{'database':>10}  {'way':<44} {'build s':>8} {'ms/query':>9} {'queries/s':>10} {'x float':>8} " \
             f"{'recall@' + str(args.k):>10} {'id recall':>9}"
    print(header)
    for size in (int(s) for s in args.sizes.split(",")):
        for row in bench_size(size, args, rng):
            print(f"{row['size']:>10,}  {row['way']:<44} {row['build']:>8.1f} {row['ms']:>9.3f} "
                  f"{1e3 / row['ms']:>10.0f} {row['speedup']:>8.1f} {row['recall']:>10.3f} {row['id_recall']:>9.3f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
