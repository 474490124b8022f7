"""DIMCH's loss (README.md, section Loss): NDCG-weighted triplets on smooth-Chamfer set similarity and on
hash cosine distance, MMD between the modalities' set elements, a diversity term and quantization.

Every pairwise quantity is at most B³ (triplets) or (B·M)² (MMD, diversity) entries: the diversity term uses
Σ_{i<j} of an (N, N) kernel instead of the reference's (N, N, N) mask, so batches of 128 fit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.common import label_overlap

from .model import SetOutput


def ndcg_weights(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sim, W) for a batch: sim = 1[L Lᵀ > 0], W = (2^{L Lᵀ} − 1) / Z with Z_a the ideal DCG of row a
    (Σ_r (2^{g_(r)} − 1) / log2(r + 2), gains sorted descending). Rows with Z = 0 (unlabeled) get W = 0."""
    gains = label_overlap(labels)
    sim = (gains > 0).to(labels.dtype)
    discount = torch.log2(torch.arange(gains.shape[1], device=gains.device, dtype=gains.dtype) + 2)
    ideal = ((2 ** gains.sort(dim=1, descending=True).values - 1) / discount).sum(dim=1, keepdim=True)
    weights = torch.where(ideal > 0, (2 ** gains - 1) / ideal.clamp_min(torch.finfo(gains.dtype).tiny), 0.0)
    return sim, weights


def weighted_triplet(distance: torch.Tensor, sim: torch.Tensor, weights: torch.Tensor, margin: float) -> torch.Tensor:
    """Σ_apn t_apn / (#{t > 1e−16} + 1e−16), t_apn = max(0, (W_ap − W_an)·sim_ap·(1 − sim_an)·(D_ap − D_an + m)).

    `distance` (B, B): rows are anchors of one modality, columns items of the other; p = a is a positive.
    """
    hinge = distance[:, :, None] - distance[:, None, :] + margin  # (a, p, n)
    weight = (weights[:, :, None] - weights[:, None, :]) * sim[:, :, None] * (1 - sim)[:, None, :]
    terms = (weight * hinge).clamp(min=0)
    return terms.sum() / ((terms > 1e-16).sum() + 1e-16)


def smooth_chamfer(x: torch.Tensor, y: torch.Tensor, temperature: float = 16.0, scale: float = 1.0,
                   denominator: float = 2.0) -> torch.Tensor:
    """Set similarity (B_x, B_y) of L2-normalised sets x (B_x, M, K) and y (B_y, N, K), c_mn = x_m·y_n:
    [ (1/(M T s)) Σ_m log Σ_n e^{T s c_mn} + (1/(N T)) Σ_n log Σ_m e^{T c_mn} ] / denominator."""
    cosine = torch.einsum("imk,jnk->ijmn", x, y)
    forward = torch.logsumexp(temperature * scale * cosine, dim=3).sum(dim=2) / (x.shape[1] * temperature * scale)
    backward = torch.logsumexp(temperature * cosine, dim=2).sum(dim=2) / (y.shape[1] * temperature)
    return (forward + backward) / denominator


def mmd(x: torch.Tensor, y: torch.Tensor, gamma: float = 0.5) -> torch.Tensor:
    """mean k(x, x) − 2 mean k(x, y) + mean k(y, y), k(a, b) = exp(−γ‖a − b‖) (unsquared distance), rows of
    x (N, K) and y (N', K); the means include the diagonal."""
    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-gamma * torch.cdist(a, b)).mean()

    return kernel(x, x) - 2 * kernel(x, y) + kernel(y, y)


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """‖x_i − x_j‖² (…, N, N) of the rows of x (…, N, K), clamped at 0."""
    norms = x.square().sum(dim=-1)
    return (norms[..., :, None] + norms[..., None, :] - 2 * x @ x.transpose(-1, -2)).clamp(min=0)


def diversity(elements: torch.Tensor, t: float = 20.0, per_set: bool = False) -> torch.Tensor:
    """Uniformity of normalised set elements (B, M, K), divided by M(M − 1)/2.

    Default (the reference as it runs): Σ_{i<j} exp(−t‖E_i − E_j‖²) over all N = B·M elements of the batch.
    `per_set` (the intended form): the same sum within each sample's set, averaged over the batch.
    """
    set_size = elements.shape[1]
    pairs = set_size * (set_size - 1) / 2
    points = elements if per_set else elements.reshape(1, -1, elements.shape[-1])
    kernel = torch.exp(-t * squared_distances(points)).triu(diagonal=1)
    return kernel.sum(dim=(1, 2)).mean() / pairs


def quantization(h: torch.Tensor) -> torch.Tensor:
    """mean((h − sign(h))²), the sign detached."""
    return (h - h.sign().detach()).square().mean()


class DIMCHLoss(nn.Module):
    """The weighted sum of README.md, section Loss (no parameters). Defaults are the kalenforn config's values."""

    def __init__(self, temperature: float = 16.0, text_scale: float = 1.0, denominator: float = 2.0,
                 token_margin: float = 0.3, hash_margin: float = 0.3, mmd_gamma: float = 0.5, diversity_t: float = 20.0,
                 per_set_diversity: bool = False, token_weight: float = 50.0, mmd_weight: float = 1.0,
                 diversity_weight: float = 0.3, hash_weight: float = 50.0, quantization_weight: float = 1.0):
        super().__init__()
        self.temperature, self.text_scale, self.denominator = temperature, text_scale, denominator
        self.token_margin, self.hash_margin = token_margin, hash_margin
        self.mmd_gamma, self.diversity_t, self.per_set_diversity = mmd_gamma, diversity_t, per_set_diversity
        self.weights = dict(token_triplet=token_weight, mmd=mmd_weight, diversity=diversity_weight,
                            hash_triplet=hash_weight, quantization=quantization_weight)

    def forward(self, out: SetOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(out.image_hash.device.type, enabled=False):
            return self._terms(*(_full(x) for x in (out.image_elements, out.image_hash, out.text_elements,
                                                   out.text_hash)), labels)

    def _terms(self, e_img: torch.Tensor, h_img: torch.Tensor, e_txt: torch.Tensor, h_txt: torch.Tensor,
               labels: torch.Tensor) -> dict[str, torch.Tensor]:
        sim, weights = ndcg_weights(labels.to(h_img.dtype))
        x, y = F.normalize(e_img, dim=-1), F.normalize(e_txt, dim=-1)
        sc = dict(temperature=self.temperature, scale=self.text_scale, denominator=self.denominator)
        sc_i2t, sc_t2i = smooth_chamfer(x, y, **sc), smooth_chamfer(y, x, **sc)
        token = (weighted_triplet((1 - sc_i2t).clamp(min=0), sim, weights, self.token_margin)
                 + weighted_triplet((1 - sc_t2i).clamp(min=0), sim, weights, self.token_margin)) / 2
        hash_distance = (1 - F.normalize(h_img, dim=1) @ F.normalize(h_txt, dim=1).T).clamp(min=0)
        hashing = (weighted_triplet(hash_distance, sim, weights, self.hash_margin)
                   + weighted_triplet(hash_distance.T, sim, weights, self.hash_margin)) / 2
        terms = {
            "token_triplet": token,
            "mmd": mmd(x.flatten(0, 1), y.flatten(0, 1), self.mmd_gamma),
            "diversity": (diversity(x, self.diversity_t, self.per_set_diversity)
                          + diversity(y, self.diversity_t, self.per_set_diversity)),
            "hash_triplet": hashing,
            "quantization": (quantization(h_img) + quantization(h_txt)) / 2,
        }
        loss = sum(self.weights[name] * value for name, value in terms.items())
        return {"loss": loss, **terms}


def _full(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 outputs of an autocast forward as float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
