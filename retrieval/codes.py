"""±1 codes as packed bits, and FAISS binary indexes over them: exact or approximate Hamming search."""
from __future__ import annotations

import faiss
import numpy as np

INDEX_KINDS = ("flat", "hnsw")
HNSW_NEIGHBOURS = 32  # links per node: 16 reached only 0.91 recall@100 at efSearch 512 on 100 k random codes
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 1024  # recall@100 0.96 on 1 M random 64-bit codes (docs/performance.md)


def pack_codes(codes) -> np.ndarray:
    """±1 codes (N, bits) -> bytes (N, ceil(bits / 8)), uint8, bit 1 where the code is > 0 (`np.packbits` order).

    Lengths that are not a multiple of 8 are padded with 0 bits in every row, which leaves distances unchanged.
    """
    array = codes.numpy() if hasattr(codes, "numpy") else np.asarray(codes)
    return np.ascontiguousarray(np.packbits(array.reshape(len(array), -1) > 0, axis=1))


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of :func:`pack_codes`: ±1 float32 codes (N, bits)."""
    return np.unpackbits(packed, axis=1, count=bits).astype(np.float32) * 2 - 1


def build_index(packed: np.ndarray, kind: str = "flat") -> faiss.IndexBinary:
    """A FAISS index over packed codes: `flat` (exact, brute force) or `hnsw` (approximate, a neighbour graph)."""
    dimension = packed.shape[1] * 8
    if kind == "flat":
        index = faiss.IndexBinaryFlat(dimension)
    elif kind == "hnsw":
        index = faiss.IndexBinaryHNSW(dimension, HNSW_NEIGHBOURS)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {INDEX_KINDS}")
    index.add(np.ascontiguousarray(packed))
    return index


def search_index(index: faiss.IndexBinary, queries: np.ndarray, k: int,
                 ef_search: int = HNSW_EF_SEARCH) -> tuple[np.ndarray, np.ndarray]:
    """Hamming distances (Q, k) and positions (Q, k) of the k nearest codes to each packed query.

    Nearest first, equal distances in position order. An approximate index may find fewer than k items:
    the missing entries have position -1 and come last.
    """
    if isinstance(index, faiss.IndexBinaryHNSW):
        index.hnsw.efSearch = max(ef_search, k)
    distances, positions = index.search(np.ascontiguousarray(queries), k)
    missing = positions < 0
    key = np.where(missing, np.iinfo(np.int64).max, distances.astype(np.int64) * (index.ntotal + 1) + positions)
    order = np.argsort(key, axis=1, kind="stable")
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(positions, order, axis=1)


def write_index(index: faiss.IndexBinary, path: str) -> None:
    """Save a FAISS binary index (flat or HNSW) to a file."""
    faiss.write_index_binary(index, path)


def read_index(path: str) -> faiss.IndexBinary:
    """Load an index written by :func:`write_index`."""
    return faiss.read_index_binary(path)
