"""Distance-weighted triplet sampling (Wu et al., "Sampling Matters in Deep Embedding Learning", ICCV 2017).

Reconstructed: DAIH imports `Margin.miner.DistanceWeightedMiner`, which its release lacks. This follows the paper and
the distance-weighted sampler of Roth et al. (MIC, ICCV 2019, which DAIH builds on): one triplet per anchor row with
a uniform positive and a negative drawn with the weights of `train.distance_weighted` (∝ 1 / q(d), q the density of
pairwise distances of points uniform on the unit sphere in n dimensions, d clamped below at a cutoff, 0.5).
"""
from __future__ import annotations

import torch

from train.distance_weighted import LOWER_CUTOFF, inverse_sphere_weights, mining_distances, triplet_roles

POSITIVE_SAMPLING = ("one", "all")


@torch.no_grad()
def sample_triplets(distances: torch.Tensor, labels: torch.Tensor, dim: int, mode: str = "embeddings",
                    cutoff: float = LOWER_CUTOFF, generator: torch.Generator | None = None, positives: str = "one"
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchors, positives, negatives) index tensors for the anchor rows of the (B, N) distance matrix.

    `labels` (B, C) multi-hot or one-hot cluster ids; column j is positive for row i when they share a label, except
    column i itself (within a modality the sample, across modalities its pair). A row anchors a triplet when it has
    a positive and a negative. `mode="embeddings"` (default): the weights use the row's own distances and the
    embedding size `dim`. `"distance_matrix"`: they use distances between rows of the matrix, with n = N, which is
    what a sampler handed the distance matrix in place of the embeddings computes (the sibling QinLab release).
    `positives="one"` (MIC's sampler): one uniform positive per anchor. `"all"` (Wu et al.'s scheme): every
    positive of every anchor, each with its own distance-weighted negative.
    """
    if positives not in POSITIVE_SAMPLING:
        raise ValueError(f"unknown positive sampling {positives!r}; choose one of {POSITIVE_SAMPLING}")
    shares, candidates, anchor = triplet_roles(labels)
    source, dim = mining_distances(distances, mode, dim)
    anchors = anchor.nonzero().squeeze(1)
    if len(anchors) == 0:
        empty = anchors.new_empty(0)
        return empty, empty, empty
    weights = inverse_sphere_weights(source[anchors], shares[anchors], dim, cutoff)
    if positives == "all":
        rows, columns = candidates[anchors].nonzero(as_tuple=True)
        negatives = torch.multinomial(weights[rows], 1, generator=generator).squeeze(1)
        return anchors[rows], columns, negatives
    chosen = torch.multinomial(candidates[anchors].to(weights.dtype), 1, generator=generator).squeeze(1)
    negatives = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return anchors, chosen, negatives
