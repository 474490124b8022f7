"""Distance-weighted negative sampling weights (Wu et al., "Sampling Matters in Deep Embedding Learning", ICCV 2017).

A negative is drawn with probability ∝ 1 / q(d), q(d) ∝ d^{n−2} (1 − d²/4)^{(n−3)/2} the density of distances between
points uniform on the unit sphere in n dimensions (Wu et al., eq. 4), with d clamped below at a cutoff. This module
holds the parts every sampler of this kind shares: which rows can anchor a triplet, the distances the weights are
computed on (the anchor-to-candidate distances themselves, or the distances between rows of the distance matrix, as
a sampler handed a distance matrix in place of the embeddings computes) and the weights. How triplets are then
drawn (one per anchor, one per positive, ...) is each method's choice.
"""
from __future__ import annotations

import torch

from train.common import label_similarity

LOWER_CUTOFF = 0.5
MINER_INPUTS = ("distance_matrix", "embeddings")


def triplet_roles(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(shares (B, B), candidates (B, B), anchors (B,)) for a batch with multi-hot (or one-hot) `labels` (B, C).

    shares[i, j]: rows i and j share a label (j = i included); candidates: the positives of row i other than
    column i (within a modality the sample itself, across modalities its pair); anchors: rows with a candidate
    and a negative (a column that shares no label). A row without labels never anchors.
    """
    shares = label_similarity(labels)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    candidates = shares & ~eye
    anchors = candidates.any(dim=1) & (~shares).any(dim=1)
    return shares, candidates, anchors


def profile_distances(matrix: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of `matrix`: sqrt(max(‖m_i‖² + ‖m_j‖² − 2 m_i·m_j, 1e-4))."""
    squared = matrix.square().sum(dim=1)
    gram = matrix @ matrix.T
    return (squared[:, None] + squared[None, :] - 2 * gram).clamp_min(1e-4).sqrt()


def mining_distances(distances: torch.Tensor, mode: str, embed_dim: int) -> tuple[torch.Tensor, int]:
    """(the distances the weights use, sphere dimension n) for a miner input mode and a (B, N) distance matrix.

    "embeddings" (Wu et al., Roth's sampler): the anchor-to-candidate distances themselves, n = `embed_dim`.
    "distance_matrix": distances between the rows of the matrix, n = N (a sampler handed the distance matrix
    as if it were the embeddings).
    """
    if mode == "distance_matrix":
        return profile_distances(distances), distances.shape[1]
    if mode == "embeddings":
        return distances, embed_dim
    raise ValueError(f"unknown miner input {mode!r}; choose one of {MINER_INPUTS}")


def inverse_sphere_weights(distances: torch.Tensor, positives: torch.Tensor, dim: int,
                           cutoff: float = LOWER_CUTOFF) -> torch.Tensor:
    """Rows of negative-sampling probabilities: sum 1 over the columns not in `positives`, 0 on them (all-0 rows
    where a row has no negative).

    log w_ij = (2 − dim) ln d_ij − (dim − 3)/2 · ln max(1 − d_ij²/4, 1e-8), d clamped below at `cutoff`; normalised
    over the row's negatives after subtracting their largest log-weight (no underflow to an all-zero row; the
    normalised weights equal those of the usual max(0, row max) shift).
    """
    d = distances.clamp_min(cutoff)
    log_q = (2.0 - dim) * d.log() - ((dim - 3.0) / 2.0) * (1.0 - d.square() / 4.0).clamp_min(1e-8).log()
    log_q = log_q.masked_fill(positives, float("-inf"))
    row_max = log_q.amax(dim=1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    q = torch.exp(log_q - row_max)
    return q / q.sum(dim=1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)
