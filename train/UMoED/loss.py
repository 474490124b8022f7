"""UMoED's loss (README.md, section Loss): a label-weighted triplet loss on position-wise distances between
tempered symbol distributions, plus a per-sample diversity term on the normalised symbol logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from train.common import label_overlap


def label_weights(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, W) for a batch of multi-hot labels: S = 1[L Lᵀ > 0] and the NDCG-style gains
    W = (2^{L Lᵀ} − 1) / Z, Z_a = Σ_r (2^{sort_desc(L Lᵀ)[a, r]} − 1) / log2(r + 2) (the ideal DCG of row a)."""
    shared = label_overlap(labels)
    similarity = (shared > 0).to(labels.dtype)
    ideal = shared.sort(dim=1, descending=True).values
    discount = torch.log2(torch.arange(shared.shape[1], device=labels.device, dtype=labels.dtype) + 2)
    norm = ((2 ** ideal - 1) / discount).sum(dim=1, keepdim=True)
    return similarity, (2 ** shared - 1) / norm.clamp(min=torch.finfo(labels.dtype).tiny)


def weighted_triplet(distance: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Σ_{a,p,n} relu((W_ap − W_an) S_ap (1 − S_an) (D_ap − D_an + m)) / (#positive terms + 1e-16).

    `distance` (B, B): rows are anchors of one modality, columns the items of the other. Positives include
    p = a. The (B, B, B) tensor is what the loss is made of (1e6 entries at the reference batch of 100).
    """
    similarity, weight = label_weights(labels)
    mask = similarity.unsqueeze(2) * (1 - similarity.unsqueeze(1))
    gain = weight.unsqueeze(2) - weight.unsqueeze(1)
    terms = (gain * mask * (distance.unsqueeze(2) - distance.unsqueeze(1) + margin)).clamp(min=0)
    return terms.sum() / ((terms > 1e-16).sum() + 1e-16)


def tempered(normalised: torch.Tensor, temperature: float | None) -> torch.Tensor:
    """softmax(ê / T) along V of the normalised logits (B, M, V); ê itself when `temperature` is None."""
    return normalised if temperature is None else (normalised / temperature).softmax(dim=-1)


def positionwise_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """D[i, j] = mean_m (1 − max(0, ⟨a[i, m], b[j, m]⟩)) for a (B1, M, V) and b (B2, M, V) -> (B1, B2)."""
    return (1 - torch.einsum("imv,jmv->ijm", a, b).clamp(min=0)).mean(dim=-1)


def diversity(normalised: torch.Tensor, t: float = 20.0) -> torch.Tensor:
    """mean_b Σ_{i<j} exp(−t ‖ê_bi − ê_bj‖²) / (M(M−1)/2) over the M unit rows of each sample (B, M, V)."""
    m = normalised.shape[1]
    if m < 2:
        return normalised.new_zeros(())
    gram = normalised @ normalised.transpose(1, 2)
    squared = (2 - 2 * gram).clamp(min=0)  # ‖a − b‖² of unit vectors, smooth at a = b
    upper = torch.ones(m, m, dtype=torch.bool, device=normalised.device).triu(diagonal=1)
    return (torch.exp(-t * squared) * upper).sum(dim=(1, 2)).mean() / (m * (m - 1) / 2)


def umoed_loss(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, temperature: float | None = 0.3,
               margin: float = 0.1, triplet_alpha: float = 1.0, unif_alpha: float = 0.8) -> dict[str, torch.Tensor]:
    """Total loss and its parts for symbol logits image, text (B, M, V) and labels (B, C).

    L = triplet_alpha · (Trip(D_i2t) + Trip(D_t2i)) / 4 + unif_alpha · (Div(img) + Div(txt)) / 3; the /4 and /3
    count the reference's two always-zero "fusion" terms. `temperature=None` skips the softmax ("extreme: False").
    """
    image_hat, text_hat = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    distance = positionwise_distance(tempered(image_hat, temperature), tempered(text_hat, temperature))
    i2t = weighted_triplet(distance, labels, margin)
    t2i = weighted_triplet(distance.T, labels, margin)
    div_image, div_text = diversity(image_hat), diversity(text_hat)
    triplet = (i2t + t2i) / 4
    div = (div_image + div_text) / 3
    return {"loss": triplet_alpha * triplet + unif_alpha * div, "triplet_i2t": i2t, "triplet_t2i": t2i,
            "div_image": div_image, "div_text": div_text}
