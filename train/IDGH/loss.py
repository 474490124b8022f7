"""IDGH's similarity loss: cosine-distance triplets weighted by an NDCG gain of the positive (QinLab "TripletLoss3").

For anchor a, positive p (shares a class with a; p = a allowed) and negative n (shares none):

    ℓ(a, p, n) = relu(w · g(a, p) · (d(a, p) − d(a, n) + m)),   d = max(1 − cos, 0),
    g(a, j) = (2^{s_aj} − 1) / Z_a,   Z_a = Σ_r (2^{s_a(r)} − 1) / log2(r + 2),

s_aj the number of classes a and j share and s_a(r) the r-th largest of row a (the ideal DCG of the batch row).
The loss is Σ ℓ over the triplets divided by the number of triplets with ℓ > 1e-16. The weight w = 0.1 is the
product of the reference's constants (10 · 0.1 · 0.1 from alpha = 10, beta = 0.1, gamma = 10).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from train.common import float32_region, label_overlap, label_similarity

WEIGHT = 0.1
ACTIVE = 1e-16  # a triplet counts in the mean when its weighted hinge exceeds this (reference)


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, M) matrix max(1 − cos(x_i, y_j), 0)."""
    return (1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T).clamp(min=0)


def ndcg_gain(labels: torch.Tensor) -> torch.Tensor:
    """(B, B) gains g(a, j) = (2^{s_aj} − 1) / Z_a of the batch against itself (s = shared-class counts).

    Rows whose ideal DCG Z_a is 0 (a label row of zeros) get gain 0; the reference divides 0 by 0 there (NaN).
    """
    shared = label_overlap(labels)
    ideal = shared.sort(dim=1, descending=True).values
    discount = torch.log2(torch.arange(labels.shape[0], device=labels.device, dtype=labels.dtype) + 2)
    z = ((2 ** ideal - 1) / discount).sum(dim=1, keepdim=True)
    return torch.where(z > 0, (2 ** shared - 1) / torch.where(z > 0, z, 1), 0)


def ranking_triplet_loss(x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, margin: float = 0.05,
                         weight: float = WEIGHT) -> torch.Tensor:
    """Mean of the NDCG-weighted hinges over the active triplets; anchors from `x`, positives and negatives from `y`.

    `x` and `y` are rows of the same samples (the same modality for the intra-modal terms); a = p is a valid
    positive in both cases, as in the reference. 0 when no triplet is active.
    """
    distance = cosine_distance(x, y)
    shares = label_similarity(labels)
    valid = shares[:, :, None] & ~shares[:, None, :]
    gain = ndcg_gain(labels)
    hinge = (weight * gain[:, :, None] * (distance[:, :, None] - distance[:, None, :] + margin)).clamp(min=0)
    hinge = hinge * valid
    return hinge.sum() / (hinge > ACTIVE).sum().clamp(min=1)


def idgh_loss(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
              margin: float = 0.05) -> dict[str, torch.Tensor]:
    """T(I, I) + T(T, T) + T(I → T) on the rows given (real codes, then any synthetic ones, with their labels).

    There is no T → I term (reference). Codes are tanh outputs or synthetic codes; they are normalised here
    (row-wise, so normalising before or after concatenating real and synthetic rows is the same).
    """
    with float32_region(image, text) as (img, txt):
        y = labels.to(img.dtype)
        terms = {"image_image": ranking_triplet_loss(img, img, y, margin),
                 "text_text": ranking_triplet_loss(txt, txt, y, margin),
                 "image_text": ranking_triplet_loss(img, txt, y, margin)}
        loss = sum(terms.values())
    return {"loss": loss, **terms}


def lambda_schedule(base: float, epochs: int, epoch: int) -> float:
    """λ_e = base × (1 if e/E ≤ 0.4, 0.9 if ≤ 0.6, 0.75 if ≤ 0.8, else 0.6); e 0-based, E the epochs."""
    progress = epoch / epochs
    factor = next((f for bound, f in ((0.4, 1.0), (0.6, 0.9), (0.8, 0.75)) if progress <= bound), 0.6)
    return base * factor


def statistics_due(epoch: int, start_epoch: int, every: int = 4) -> bool:
    """Whether the class statistics are re-estimated before 0-based `epoch` (reference: e > start and e % 4 == 0)."""
    return epoch > start_epoch and epoch % every == 0


def synthesis_active(epoch: int, start_epoch: int, warmup_epochs: int = 0) -> bool:
    """Whether 0-based `epoch` trains with synthetic codes (reference: e > start_epoch + warmup_epoch)."""
    return epoch > start_epoch + warmup_epochs

