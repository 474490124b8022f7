"""DHaPH's losses (README.md, section Loss).

(a) A self-paced contrastive loss on cosine similarities (the reference calls it `MSLoss`).
(b) The hierarchy-aware proxy loss (`HPLoss`, adapted from HIER): codes and learnable proxies in a Poincaré ball,
    triplets from reciprocal nearest neighbours, lowest-common-ancestor constraints among samples and proxies.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .hyperbolic import ToPoincare, poincare_distance


def self_paced_delta(epoch: int, total_epochs: int) -> float:
    """δ = e/⌊E/3⌋ for the 1-based epoch e = epoch + 1 up to ⌊E/3⌋, then 1 (1 as well when E < 3)."""
    third = total_epochs // 3
    return 1.0 if third == 0 else min((epoch + 1) / third, 1.0)


def self_paced_loss(a: torch.Tensor, b: torch.Tensor, similar: torch.Tensor, delta: float,
                    tau: float = 0.3) -> torch.Tensor:
    """mean_i −log(P_i / (P_i + N_i)) over the cosines s = cos(a_i, b_j).

    P_i = Σ_j S_ij e^{s/τ} w⁺, N_i = Σ_j (1 − S_ij) e^{s/τ} w⁻ with detached weights w⁺ = exp(−1 − s)^{δ/4},
    w⁻ = exp(−1 + s)^{δ} (δ = 0: no weighting). Computed in log space; rows without a positive are left out
    (the reference gives inf there).
    """
    cos = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    fixed = cos.detach()
    positive = cos / tau - (1 + fixed) * (delta / 4)
    negative = cos / tau + (fixed - 1) * delta
    has_positive = similar.any(dim=1)
    as_positive = similar | ~has_positive[:, None]  # such rows give 0 without inf/NaN in the backward
    log_p = torch.where(as_positive, positive, -math.inf).logsumexp(dim=1)
    log_all = torch.where(as_positive, positive, negative).logsumexp(dim=1)
    return (log_all - log_p).sum() / has_positive.sum().clamp(min=1)


def reciprocal_triplets(graph: torch.Tensor, k: int, per_anchor: int) -> tuple[torch.Tensor, ...] | None:
    """(anchor, positive, negative) indices from mutual k-nearest neighbours of a similarity graph (N×N).

    Positives of i: the j ≠ i that have each other among their top k (self counted in the top k). An anchor needs
    more than one; it gets `per_anchor` positives and as many negatives (all other items, i itself included),
    drawn uniformly with replacement. None when no anchor qualifies.
    """
    n = len(graph)
    top = graph.topk(min(k, n), dim=1).indices
    neighbours = torch.zeros_like(graph).scatter_(1, top, 1.0)
    reciprocal = (neighbours + neighbours.T) / 2
    reciprocal.fill_diagonal_(-1)
    mutual = reciprocal == 1
    anchors = (mutual.sum(dim=1) > 1).nonzero().squeeze(1)
    if anchors.numel() == 0:
        return None
    positives = torch.multinomial(mutual[anchors].float(), per_anchor, replacement=True)
    negatives = torch.multinomial((reciprocal[anchors] < 1).float(), per_anchor, replacement=True)
    return anchors.repeat_interleave(per_anchor), positives.flatten(), negatives.flatten()


def lca_triplet_loss(triplets: tuple[torch.Tensor, ...] | None, proxy_distance: torch.Tensor, margin: float = 0.1,
                     temperature: float = 0.1) -> torch.Tensor:
    """HIER's gHHC: mean over triplets (i, j, k) of the lowest-common-ancestor hinge terms.

    `proxy_distance[x, p]` is the distance of item x to proxy p. The LCA of (i, j) is a hard Gumbel-softmax pick
    (straight-through) over −max(d_i, d_j)/temperature, the LCA of (i, j, k) likewise with d_k included. With d_x(π)
    the distance of x to the picked proxy: relu(d_i(π_ij) − d_i(π_ijk) + μ) + relu(d_j(π_ij) − d_j(π_ijk) + μ)
    + relu(d_k(π_ijk) − d_k(π_ij) + μ), counted only where the two LCAs differ.
    """
    if triplets is None:
        return proxy_distance.new_zeros(())
    d_i, d_j, d_k = (proxy_distance[index] for index in triplets)
    max_ij = torch.maximum(d_i, d_j)
    lca_ij = F.gumbel_softmax(-max_ij / temperature, dim=1, hard=True)
    lca_ijk = F.gumbel_softmax(-torch.maximum(d_k, max_ij) / temperature, dim=1, hard=True)

    def at(d: torch.Tensor, lca: torch.Tensor) -> torch.Tensor:
        return (d * lca).sum(dim=1)

    hinge = (F.relu(at(d_i, lca_ij) - at(d_i, lca_ijk) + margin) + F.relu(at(d_j, lca_ij) - at(d_j, lca_ijk) + margin)
             + F.relu(at(d_k, lca_ijk) - at(d_k, lca_ij) + margin))
    return (hinge * (lca_ij.argmax(dim=1) != lca_ijk.argmax(dim=1))).mean()


class HyperbolicEmbedding(nn.Module):
    """The reference `HPmodel`: LayerNorm(K, no affine) -> Linear(K, K) -> ToPoincare (shared by both modalities)."""

    def __init__(self, bits: int, c: float = 0.1, clip_r: float = 2.3):
        super().__init__()
        self.norm = nn.LayerNorm(bits, elementwise_affine=False)
        self.linear = nn.Linear(bits, bits)
        self.to_ball = ToPoincare(c, clip_r)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.to_ball(self.linear(self.norm(codes)))


class HierarchyProxyLoss(nn.Module):
    """L_hp with its learnable parts: the embedding into the ball and `num_proxies` hyperbolic proxies (lcas).

    forward(image, text, similar) -> {"hp_image", "hp_text"}: for each modality, gHHC over sample triplets (mutual
    neighbours of exp(−d) + S among the batch codes) plus gHHC over proxy triplets (mutual neighbours of exp(−d)
    among the proxies). The two proxy terms use the same distances, with their own sampling and Gumbel noise.
    The reference builds the full (B + HM)² distance matrix per modality; only its three used blocks are built here
    (the proxy block once).
    """

    def __init__(self, bits: int, num_proxies: int = 500, margin: float = 0.1, topk: int = 15,
                 triplets_per_anchor: int = 50, lca_temperature: float = 0.1, c: float = 0.1, clip_r: float = 2.3):
        super().__init__()
        self.c, self.margin, self.topk = c, margin, topk
        self.triplets_per_anchor, self.lca_temperature = triplets_per_anchor, lca_temperature
        self.embed = HyperbolicEmbedding(bits, c, clip_r)
        self.proxies = nn.Parameter(torch.randn(num_proxies, bits) / math.sqrt(bits) * clip_r * 0.9)
        self.proxies_to_ball = ToPoincare(c, clip_r)

    def _lca_loss(self, graph: torch.Tensor, proxy_distance: torch.Tensor) -> torch.Tensor:
        triplets = reciprocal_triplets(graph, self.topk, self.triplets_per_anchor)
        return lca_triplet_loss(triplets, proxy_distance, self.margin, self.lca_temperature)

    def forward(self, image: torch.Tensor, text: torch.Tensor, similar: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(image.device.type, enabled=False):
            lcas = self.proxies_to_ball(self.proxies)
            between_proxies = poincare_distance(lcas, lcas, self.c)
            proxy_graph = torch.exp(-between_proxies.detach())
            out = {}
            for name, codes in (("hp_image", image), ("hp_text", text)):
                points = self.embed(codes.float())
                graph = torch.exp(-poincare_distance(points, points, self.c).detach()) + similar
                to_proxies = poincare_distance(points, lcas, self.c)
                out[name] = self._lca_loss(graph, to_proxies) + self._lca_loss(proxy_graph, between_proxies)
        return out
