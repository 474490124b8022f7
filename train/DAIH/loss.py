"""DAIH's losses: margin loss with learnable class (or cluster) boundaries β on distance-weighted triplets, and the
adversarial decorrelation of the class and auxiliary embeddings through a gradient-reversal projection."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.common import float32_region

from .miner import sample_triplets


def anchor_beta(beta: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """β_a = Σ_c L_ac β_c / Σ_c L_ac for each row of `labels` (one-hot cluster ids: β of the cluster)."""
    return (labels @ beta.to(labels.dtype)) / labels.sum(dim=1).clamp_min(1)


def margin_triplet_loss(distances: torch.Tensor, beta_a: torch.Tensor, anchors: torch.Tensor,
                        positives: torch.Tensor, negatives: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Σ_t [relu(d_ap − β_a + m) + relu(β_a − d_an + m)] / #(triplets with an active term); 0 with no triplet.

    `beta_a` (B,) per row; the triplets index rows (anchors) and columns (positives, negatives) of `distances`.
    """
    if len(anchors) == 0:
        return distances.new_zeros(())
    beta = beta_a[anchors]
    pos = F.relu(distances[anchors, positives] - beta + margin)
    neg = F.relu(beta - distances[anchors, negatives] + margin)
    active = ((pos > 0) | (neg > 0)).sum()
    return (pos + neg).sum() / active.clamp_min(1)


class MarginLoss(nn.Module):
    """Margin loss (Wu et al. 2017) with one learnable boundary β per class (or cluster), init `beta`.

    forward(x, labels, y=None): anchors are the rows of x, candidates the rows of y (x itself when None); x and y
    are the L2-normalised embeddings, distances are Euclidean.
    """

    def __init__(self, num_classes: int, beta: float = 1.2, margin: float = 0.2, cutoff: float = 0.5,
                 miner_input: str = "embeddings", positives: str = "one"):
        super().__init__()
        self.beta = nn.Parameter(torch.full((num_classes,), float(beta)))
        self.margin, self.cutoff, self.miner_input, self.positives = margin, cutoff, miner_input, positives

    def forward(self, x: torch.Tensor, labels: torch.Tensor, y: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """(loss, number of sampled triplets)."""
        with float32_region(x, labels, x if y is None else y) as (x, labels, y):
            distances = torch.cdist(x, y)
            anchors, positives, negatives = sample_triplets(distances.detach(), labels, x.shape[1], self.miner_input,
                                                            self.cutoff, generator, self.positives)
            loss = margin_triplet_loss(distances, anchor_beta(self.beta, labels), anchors, positives, negatives,
                                       self.margin)
        return loss, len(anchors)


def metric_loss(criterion: MarginLoss, labels: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """ML(x) (y None) or ML(x) + ML(y) + ML(x, y) + ML(y, x): the reference's `calc_triplet_loss`."""
    total = criterion(x, labels, generator=generator)[0]
    if y is None:
        return total
    for anchors, candidates in ((y, None), (x, y), (y, x)):
        total = total + criterion(anchors, labels, candidates, generator=generator)[0]
    return total


class GradientReversal(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the incoming gradient by −1."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def grad_reverse(x: torch.Tensor) -> torch.Tensor:
    """x in the forward pass, −∂ in the backward pass."""
    return GradientReversal.apply(x)


class DecorrelationLoss(nn.Module):
    """Adversarial decorrelation of the class embedding c and the auxiliary embedding a (MIC's "mutual" loss).

    L = −mean_{b,k} (ĉ_bk · r̂_bk)², ĉ = c/‖c‖, r̂ = R(â)/‖R(â)‖, R = Linear(K_aux, hidden) → ReLU → Linear(hidden, K).
    Both inputs pass through a gradient reversal first: R learns to predict c from a (minimising L), while the
    encoders receive −∂L and make the two embeddings less predictable from each other.
    """

    def __init__(self, bits: int, aux_bits: int | None = None, hidden: int = 512):
        super().__init__()
        self.regressor = nn.Sequential(nn.Linear(aux_bits or bits, hidden), nn.ReLU(), nn.Linear(hidden, bits))

    def forward(self, cls: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        with float32_region(cls, aux) as (cls, aux):
            c = F.normalize(grad_reverse(cls), dim=-1)
            r = F.normalize(self.regressor(F.normalize(grad_reverse(aux), dim=-1)), dim=-1)
            return -(c * r).square().mean()


class DAIHLoss(nn.Module):
    """The learnable parts of DAIH's losses (checkpointed) and the losses of its two steps.

    β of the class margin loss (C,), β of the auxiliary margin loss (n_clusters,, shared by both modalities) and
    one decorrelation regressor shared by both modalities.
    """

    def __init__(self, bits: int, num_classes: int, n_clusters: int, beta: float = 1.2, margin: float = 0.2,
                 cutoff: float = 0.5, miner_input: str = "embeddings", hidden: int = 512,
                 adversarial_weight: float = 10.0, positives: str = "one"):
        super().__init__()
        self.cls = MarginLoss(num_classes, beta, margin, cutoff, miner_input, positives)
        self.aux = MarginLoss(n_clusters, beta, margin, cutoff, miner_input, positives)
        self.decorrelation = DecorrelationLoss(bits, hidden=hidden)
        self.adversarial_weight = adversarial_weight

    def class_step(self, image_cls: torch.Tensor, image_aux: torch.Tensor, text_cls: torch.Tensor,
                   text_aux: torch.Tensor, labels: torch.Tensor,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """metric_loss(ML_cls, L, x_cls, y_cls) + w · (L_dec(x_cls, x_aux) + L_dec(y_cls, y_aux))."""
        metric = metric_loss(self.cls, labels, image_cls, text_cls, generator)
        decorrelation = self.decorrelation(image_cls, image_aux) + self.decorrelation(text_cls, text_aux)
        return {"loss": metric + self.adversarial_weight * decorrelation, "class_metric": metric,
                "class_decorrelation": decorrelation}

    def auxiliary_step(self, image_cls: torch.Tensor, image_aux: torch.Tensor, image_clusters: torch.Tensor,
                       text_cls: torch.Tensor, text_aux: torch.Tensor, text_clusters: torch.Tensor,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """ML_aux(x'_aux; clusters_I) + ML_aux(y''_aux; clusters_T) + w · (L_dec(x'_cls, x'_aux) + L_dec(y''_cls,
        y''_aux)) on an image batch and an independent text batch; clusters as one-hot rows."""
        metric = (metric_loss(self.aux, image_clusters, image_aux, generator=generator)
                  + metric_loss(self.aux, text_clusters, text_aux, generator=generator))
        decorrelation = self.decorrelation(image_cls, image_aux) + self.decorrelation(text_cls, text_aux)
        return {"loss": metric + self.adversarial_weight * decorrelation, "auxiliary_metric": metric,
                "auxiliary_decorrelation": decorrelation}
