"""DCGH's loss: class proxies, a pairwise term, a negative-pair term and a variance constraint.

Per modality the codes are pulled to the proxies of their classes and pushed below a cosine threshold from the
others (the DSPH proxy loss); a pairwise term asks the cosine of two codes to reach the cosine of their label
vectors; label-disjoint multi-label samples are pushed apart; and the variance of each sample's masked proxy
distances is penalised. Formulas and reference behaviour: README.md of this folder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.common import cosine, float32_region, label_similarity, masked_mean


def proxy_terms(codes: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor,
                threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pull, push, variance) of one modality's codes against the class proxies.

    pull: mean of 1 - cos over the (sample, present class) entries; push: mean of relu(cos - δ) over the
    (sample, absent class) entries; variance: batch mean of the unbiased variance, over all C classes, of the row
    that holds 1 - cos at present classes and 0 elsewhere (the reference's formula).
    """
    cos = cosine(codes, proxies)
    distance = 1 - cos
    positive, negative = labels == 1, labels == 0
    pull = masked_mean(distance, positive)
    push = masked_mean(F.relu(cos - threshold), negative)
    variance = torch.where(positive, distance, torch.zeros_like(distance)).var(dim=1).mean()
    return pull, push, variance


def pairwise_term(a: torch.Tensor, b: torch.Tensor, label_cosine: torch.Tensor) -> torch.Tensor:
    """Mean of relu(label cosine - code cosine) over the pairs whose label cosine is positive (diagonal included)."""
    return masked_mean(F.relu(label_cosine - cosine(a, b)), label_cosine > 0)


def negative_pair_terms(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                        threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean relu(cos - δ) over label-disjoint pairs of multi-label samples, for I-I, T-T and I-T (0 without pairs)."""
    multi = labels.sum(dim=1) > 1
    disjoint = ~label_similarity(labels[multi])
    if not disjoint.any():
        zero = image.new_zeros(())
        return zero, zero, zero
    x, y = image[multi], text[multi]
    return tuple(masked_mean(F.relu(cosine(a, b) - threshold), disjoint) for a, b in ((x, x), (y, y), (x, y)))


class DCGHLoss(nn.Module):
    """Learnable class proxies (C, K) shared by both modalities, and the DCGH loss on tanh codes."""

    def __init__(self, num_classes: int, bits: int, *, threshold: float = 0.0, pair_weight: float = 0.05,
                 negative_weight: float = 0.8, variance_weight: float = 1.0, proxy_seed: int = 0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"DCGH's variance constraint needs at least 2 classes, got {num_classes}")
        self.threshold = threshold
        self.pair_weight = pair_weight
        self.negative_weight = negative_weight
        self.variance_weight = variance_weight
        proxies = torch.empty(num_classes, bits)
        # kaiming_normal(fan_out) = N(0, 2 / C), then tanh (the reference squashes the initial proxies)
        nn.init.kaiming_normal_(proxies, mode="fan_out", generator=torch.Generator().manual_seed(proxy_seed))
        self.proxies = nn.Parameter(torch.tanh(proxies))

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss and its terms for tanh codes `image`, `text` (B, K) and 0/1 `labels` (B, C) of the (global) batch."""
        with float32_region(image, text, labels) as (image, text, labels):
            proxies = self.proxies.to(image.dtype)
            pull_i, push_i, variance_i = proxy_terms(image, proxies, labels, self.threshold)
            pull_t, push_t, variance_t = proxy_terms(text, proxies, labels, self.threshold)
            label_cosine = cosine(labels, labels)
            pairwise = sum(pairwise_term(a, b, label_cosine) for a, b in ((image, image), (text, text), (image, text)))
            negative = sum(negative_pair_terms(image, text, labels, self.threshold))
            variance = variance_i + variance_t
            loss = (pull_i + push_i + pull_t + push_t + self.negative_weight * negative
                    + self.pair_weight * pairwise + self.variance_weight * variance)
        return {"loss": loss, "proxy_image": pull_i + push_i, "proxy_text": pull_t + push_t,
                "pairwise": pairwise, "negative_pairs": negative, "variance": variance}
