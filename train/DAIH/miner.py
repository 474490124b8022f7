"""Distance-weighted triplet sampling (Wu et al., "Sampling Matters in Deep Embedding Learning", ICCV 2017).

Reconstructed: DAIH imports `Margin.miner.DistanceWeightedMiner`, which its release lacks. This follows the paper and
the distance-weighted sampler of Roth et al. (MIC, ICCV 2019, which DAIH builds on): one triplet per anchor row with
a uniform positive and a negative drawn with probability ∝ 1 / q(d), q the density of pairwise distances of points
uniform on the unit sphere in n dimensions, d clamped below at a cutoff (0.5).
"""
from __future__ import annotations

import torch

from train.common import label_similarity

MINER_INPUTS = ("embeddings", "distance_matrix")


def inverse_sphere_weights(distances: torch.Tensor, positives: torch.Tensor, dim: int,
                           cutoff: float = 0.5) -> torch.Tensor:
    """Rows of negative-sampling probabilities (0 on positives; all-0 rows where a row has no negative).

    1/q(d) ∝ d^{2−n} (1 − d²/4)^{−(n−3)/2} with d = max(distance, cutoff) and 1 − d²/4 clamped at 1e-8; normalised
    over the row's negatives after subtracting their maximum log-weight (no underflow to an all-zero row).
    """
    d = distances.clamp_min(cutoff)
    log_w = (2.0 - dim) * d.log() - ((dim - 3.0) / 2.0) * (1.0 - d.square() / 4.0).clamp_min(1e-8).log()
    log_w = log_w.masked_fill(positives, float("-inf"))
    top = log_w.amax(dim=1, keepdim=True)
    w = (log_w - torch.where(torch.isfinite(top), top, torch.zeros_like(top))).exp()
    return w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


def row_profile_distances(distances: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of a distance matrix: sqrt(max(‖D_i − D_j‖², 1e-4))."""
    square = distances.square().sum(dim=1)
    return (square[:, None] + square[None, :] - 2 * distances @ distances.T).clamp_min(1e-4).sqrt()


@torch.no_grad()
def sample_triplets(distances: torch.Tensor, labels: torch.Tensor, dim: int, mode: str = "embeddings",
                    cutoff: float = 0.5, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchors, positives, negatives) index tensors for the anchor rows of the (B, N) distance matrix.

    `labels` (B, C) multi-hot or one-hot cluster ids; column j is positive for row i when they share a label, except
    column i itself (within a modality the sample, across modalities its pair). A row anchors a triplet when it has
    a positive and a negative. `mode="embeddings"` (default): the weights use the row's own distances and the
    embedding size `dim`. `"distance_matrix"`: they use distances between rows of the matrix, with n = N, which is
    what a sampler handed the distance matrix in place of the embeddings computes (the sibling QinLab release).
    """
    if mode not in MINER_INPUTS:
        raise ValueError(f"unknown miner input {mode!r}; choose one of {MINER_INPUTS}")
    shares = label_similarity(labels)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    candidates = shares & ~eye
    anchors = (candidates.any(dim=1) & (~shares).any(dim=1)).nonzero().squeeze(1)
    if len(anchors) == 0:
        empty = anchors.new_empty(0)
        return empty, empty, empty
    if mode == "distance_matrix":
        source, dim = row_profile_distances(distances), distances.shape[1]
    else:
        source = distances
    weights = inverse_sphere_weights(source[anchors], shares[anchors], dim, cutoff)
    positives = torch.multinomial(candidates[anchors].to(weights.dtype), 1, generator=generator).squeeze(1)
    negatives = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return anchors, positives, negatives
