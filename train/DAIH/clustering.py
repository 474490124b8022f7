"""Surrogate labels for DAIH's auxiliary task: class-wise standardisation of the first features and k-means."""
from __future__ import annotations

import numpy as np
import torch
from scipy.cluster.vq import kmeans2

from utils.errors import UserError


def standardize_by_labels(embeddings: torch.Tensor, labels: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over each sample's classes of (x − μ_c) / (σ_c + eps), μ_c, σ_c (population std, ≥ eps) over the samples
    with class c: removes what the classes explain, so k-means groups what they share (the reference's
    `normalize_embeddings_by_multilabel`). Every sample needs a label."""
    x = embeddings.double()
    positive = (labels > 0).double()
    counts = positive.sum(dim=1)
    if torch.any(counts == 0):
        raise UserError(f"{int((counts == 0).sum())} training samples have no label; the initial clustering "
                        "standardises by class and needs at least one label per sample")
    per_class = positive.sum(dim=0).clamp_min(1)[:, None]
    means = positive.T @ x / per_class
    variances = positive.T @ x.square() / per_class - means.square()
    stds = torch.where(positive.sum(dim=0)[:, None] > 0, variances.clamp_min(0).sqrt().clamp_min(eps),
                       torch.ones_like(means))
    inv = 1 / (stds + eps)
    # Σ_c y_c (x − μ_c) / s_c = x ⊙ (y @ inv) − y @ (μ ⊙ inv)
    total = x * (positive @ inv) - positive @ (means * inv)
    return (total / counts[:, None]).to(embeddings.dtype)


def kmeans_labels(features: torch.Tensor | np.ndarray, n_clusters: int, seed: int = 0,
                  iterations: int = 20) -> torch.Tensor:
    """Cluster ids (N,) from k-means (k-means++ start, `iterations` Lloyd steps, seeded) on the rows of `features`."""
    data = np.asarray(features.detach().cpu().double() if torch.is_tensor(features) else features, dtype=np.float64)
    if len(data) < n_clusters:
        raise UserError(f"{len(data)} training samples cannot form {n_clusters} clusters; lower --n-clusters")
    _, ids = kmeans2(data, n_clusters, iter=iterations, minit="++", seed=np.random.default_rng(seed))
    return torch.from_numpy(ids.astype(np.int64))
