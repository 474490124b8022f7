"""DSSH's loss: a stochastic vMF proxy loss on the image, text and averaged codes, plus soft-label cross-entropies
on the code inner products. Formulas: README.md of this folder."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from train.common import float32_region, label_overlap
from train.DSSH import vmf

Noise = tuple[torch.Tensor, torch.Tensor]


def proxy_init_std(kappa_confidence: float, bits: int) -> float:
    """Standard deviation of the initial proxy entries: κ_c / (1 - κ_c²) · (K - 1) / √K."""
    return kappa_confidence / (1 - kappa_confidence ** 2) * (bits - 1) / math.sqrt(bits)


def similarity_cross_entropy(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -Σ_j target_ij log softmax_j(a_i · b_j) (targets used as given, not normalised)."""
    return -(target * F.log_softmax(a @ b.T, dim=1)).sum(dim=1).mean()


def fill_empty_labels(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of `labels` where every row without a label gets one class drawn uniformly."""
    empty = labels.sum(dim=1) == 0
    filled = labels.clone()
    if empty.any():
        classes = torch.randint(labels.shape[1], (int(empty.sum()),), generator=generator,
                                device=generator.device if generator is not None else labels.device)
        filled[empty.nonzero(as_tuple=True)[0], classes.to(labels.device)] = 1
    return filled


class VMFProxyLoss(nn.Module):
    """Class proxies whose sums (per label set) define vMF targets; the loss bounds the vMF softmax cross-entropy.

    Per row: an embedding x gives a vMF with μ = x / ‖x‖, κ = ‖x‖; z ~ vMF(μ, κ) (`samples` draws). With proxies P
    (C, K) and β = exp(-temperature):
        loss = mean_i [ mean_s log Σ_c exp(log C(‖p_c‖²) - log C(‖p_c + β z_is‖²)) - β E[y_i]ᵀ E[x_i] ]
    where E[·] is the vMF mean (`vmf.expected_direction`) and y_i = Σ_{c ∈ labels_i} p_c.
    """

    def __init__(self, num_classes: int, bits: int, samples: int, *, init_temperature: float = 0.0,
                 kappa_confidence: float = 0.7, proxy_seed: int = 0):
        super().__init__()
        self.bits = bits
        self.samples = samples
        self.temperature = nn.Parameter(torch.full((1, 1), float(init_temperature)))
        generator = torch.Generator().manual_seed(proxy_seed)
        std = proxy_init_std(kappa_confidence, bits)
        self.proxies = nn.Parameter(torch.randn(num_classes, bits, generator=generator) * std)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, noise: Noise | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss for embeddings (B, K) and labels (B, C) with at least one label per row.

        `noise` = (e, v) of `vmf.draw_noise` for (samples, B) draws; drawn here (from `generator`) when None.
        """
        proxies = self.proxies.to(embeddings.dtype)
        beta = torch.exp(-self.temperature.to(embeddings.dtype)).squeeze()
        kappa = embeddings.norm(dim=1, keepdim=True)
        target = vmf.expected_direction(labels.to(embeddings.dtype) @ proxies)
        attraction = beta * (target * vmf.expected_direction(embeddings)).sum(dim=1)
        if noise is None:
            noise = vmf.draw_noise(kappa.detach(), self.bits, self.samples, generator)
        z = vmf.rsample(embeddings / kappa, kappa, *noise).transpose(0, 1)  # (B, samples, K)
        squared_norms = proxies.pow(2).sum(dim=1)
        shifted = squared_norms + beta ** 2 + 2 * beta * (z @ proxies.T)  # ‖p_c + β z‖², z on the unit sphere
        log_ratio = vmf.log_normalizer(squared_norms, self.bits) - vmf.log_normalizer(shifted, self.bits)
        return (torch.logsumexp(log_ratio, dim=2).mean(dim=1) - attraction).mean()


class DSSHLoss(nn.Module):
    """vMF proxy loss on the image, the text and the averaged codes, plus the three similarity cross-entropies."""

    def __init__(self, num_classes: int, bits: int, samples: int, **vmf_options):
        super().__init__()
        self.vmf = VMFProxyLoss(num_classes, bits, samples, **vmf_options)

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                noise: tuple[Noise, Noise, Noise] | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Loss and terms for tanh codes (B, K) and labels (B, C) of the (global) batch, every row labelled.

        `noise`: the draws for the image, text and mean terms, in that order (drawn from `generator` when None).
        """
        noise = noise or (None, None, None)
        with float32_region(image, text, labels) as (image, text, labels):
            vmf_image = self.vmf(image, labels, noise[0], generator)
            vmf_text = self.vmf(text, labels, noise[1], generator)
            vmf_mean = self.vmf((image + text) / 2, labels, noise[2], generator)
            overlap = label_overlap(labels)
            similarity = (similarity_cross_entropy(image, text, overlap) + similarity_cross_entropy(image, image, overlap)
                          + similarity_cross_entropy(text, text, overlap))
            loss = vmf_image + vmf_text + vmf_mean + similarity
        return {"loss": loss, "vmf_image": vmf_image, "vmf_text": vmf_text, "vmf_mean": vmf_mean,
                "similarity": similarity}
