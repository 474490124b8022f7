"""Distance-weighted triplet sampling (Wu et al. 2017, in Roth's DML-baselines form) as DDWSH uses it.

README.md, section Loss. One triplet per anchor row: a uniform positive (sharing a label, not the anchor's own
column) and a negative drawn with the weights of `train.distance_weighted` (inversely proportional to the density of
distances on a `dim`-dimensional hypersphere). Vectorised over anchors: rows that cannot form a triplet are sampled
anyway (with dummy weights) and reported as invalid.
"""
from __future__ import annotations

import torch

from train.distance_weighted import LOWER_CUTOFF, inverse_sphere_weights, mining_distances, triplet_roles

POSITIVE_SAMPLING = ("one", "all")


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
    shares, candidates, anchor = triplet_roles(labels)
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
