"""Distance-weighted triplet sampling (Wu et al. 2017, in Roth's DML-baselines form) as DDWSH uses it.

README.md, section Loss. One triplet per anchor row: a uniform positive (sharing a
label, not the anchor's own column) and a negative drawn with probability inversely proportional to
the density of distances on a `dim`-dimensional hypersphere. Vectorised over anchors: rows that
cannot form a triplet are sampled anyway (with dummy weights) and reported as invalid.
"""
from __future__ import annotations

import torch

from train.common import label_similarity

LOWER_CUTOFF = 0.5
MINER_INPUTS = ("distance_matrix", "embeddings")
POSITIVE_SAMPLING = ("one", "all")


def profile_distances(matrix: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of `matrix`: sqrt(max(‖m_i‖² + ‖m_j‖² − 2 m_i·m_j, 1e-4))."""
    squared = matrix.square().sum(dim=1)
    gram = matrix @ matrix.T
    return (squared[:, None] + squared[None, :] - 2 * gram).clamp_min(1e-4).sqrt()


def inverse_sphere_weights(distances: torch.Tensor, positives: torch.Tensor, dim: int,
                           cutoff: float = LOWER_CUTOFF) -> torch.Tensor:
    """Sampling weights q (rows sum to 1 over non-positive columns, 0 on positives; all-0 rows without negatives).

    log q_ij = (2 − dim) ln d_ij − (dim − 3)/2 · ln max(1 − d_ij²/4, 1e-8), d clamped below at `cutoff` (0.5).
    The reference subtracts max(0, max over negatives) before exp; subtracting the negatives' max gives the
    same normalised q and cannot underflow to an all-zero row.
    """
    d = distances.clamp_min(cutoff)
    log_q = (2.0 - dim) * d.log() - ((dim - 3.0) / 2.0) * (1.0 - d.square() / 4.0).clamp_min(1e-8).log()
    log_q = log_q.masked_fill(positives, float("-inf"))
    row_max = log_q.amax(dim=1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    q = torch.exp(log_q - row_max)
    return q / q.sum(dim=1, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)


def mining_distances(distances: torch.Tensor, mode: str, embed_dim: int) -> tuple[torch.Tensor, int]:
    """(anchor-to-candidate distances the weights use, sphere dimension) for a miner input mode.

    "distance_matrix" (reference): distances between the rows of the B×N distance matrix, dim = N.
    "embeddings" (Roth's original): the anchor-to-candidate distances themselves, dim = K.
    """
    if mode == "distance_matrix":
        return profile_distances(distances), distances.shape[1]
    if mode == "embeddings":
        return distances, embed_dim
    raise ValueError(f"unknown miner input {mode!r}; choose one of {MINER_INPUTS}")


@torch.no_grad()
def sample_triplets(distances: torch.Tensor, labels: torch.Tensor, mode: str = "distance_matrix",
                    embed_dim: int | None = None, positives: str = "one", generator: torch.Generator | None = None,
                    cutoff: float = LOWER_CUTOFF) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triplet columns for the anchor rows of the B×N distance matrix: (positive, negative, valid), each (B, P).

    `labels` (B, C) multi-hot; column j is positive for row i when they share a label. Row i can anchor when it
    has a positive other than column i and at least one negative. `positives="one"` (reference, P = 1): one
    uniform positive per anchor. `"all"` (Wu et al.'s scheme, P = N): every positive of the anchor, each with
    its own distance-weighted negative; `valid` marks the real anchor-positive pairs. `cutoff`: the weights'
    lower distance clamp (a larger one spreads the draws over more negatives).
    """
    size = distances.shape[0]
    shares = label_similarity(labels)
    eye = torch.eye(size, dtype=torch.bool, device=distances.device)
    candidates = shares & ~eye
    anchor = candidates.any(dim=1) & (~shares).any(dim=1)
    source, dim = mining_distances(distances, mode, embed_dim if embed_dim is not None else distances.shape[1])
    weights = torch.where(anchor[:, None], inverse_sphere_weights(source, shares, dim, cutoff), 1.0)
    if positives == "one":
        positive_weights = torch.where(anchor[:, None], candidates.to(weights.dtype), 1.0)
        positive = torch.multinomial(positive_weights, 1, generator=generator)
        valid = anchor[:, None]
    elif positives == "all":
        positive = torch.arange(size, device=distances.device).expand(size, size)
        valid = candidates & anchor[:, None]
    else:
        raise ValueError(f"unknown positive sampling {positives!r}; choose one of {POSITIVE_SAMPLING}")
    negative = torch.multinomial(weights, positive.shape[1], replacement=True, generator=generator)
    return positive, negative, valid
