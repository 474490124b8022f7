"""DNPH's loss: multi-label proxy loss with an additive margin, classification, uniform-distribution term.

Details: README.md, section Loss.

    L = L_p + L_d − λ·L_u
    L_p = (1/2B) Σ_n Σ_c −Ŷ_nc log softmax_c(−‖f̂_n − p̂_c‖² − mrg·Ŷ_nc)    over F = [h^I; h^T], Ŷ = [Y; Y]
    L_d = CE(g^I, argmax Y) + CE(g^T, argmax Y)
    L_u = mean_i ⟨h^I_i, n^I_i⟩ + mean_i ⟨h^T_i, n^T_i⟩                  (Hungarian-assigned ±1 targets)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .noise import alignment, assign_targets, random_signs


def proxy_loss(codes: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor, margin: float) -> torch.Tensor:
    """L_p for codes (N, K) with multi-hot labels (N, C): every positive class adds its own −log-probability."""
    f, p = F.normalize(codes, dim=1), F.normalize(proxies, dim=1)
    distance = f.square().sum(1, keepdim=True) + p.square().sum(1) - 2 * f @ p.T  # squared L2 (2 − 2 cos)
    log_prob = F.log_softmax(-(distance + margin * labels), dim=1)
    return -(labels * log_prob).sum(dim=1).mean()


def argmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean CE against the first positive class of each row (the reference's argmax; all-zero rows -> class 0)."""
    return F.cross_entropy(logits, labels.argmax(dim=1))


class DNPHLoss(nn.Module):
    """Class proxies P (C, K), init N(0, 1)/8, and the DNPH loss on tanh codes and classifier logits."""

    def __init__(self, num_classes: int, bits: int, margin: float = 1.0, noise_weight: float = 0.1,
                 proxy_seed: int = 0):
        super().__init__()
        self.margin = margin
        self.noise_weight = noise_weight
        generator = torch.Generator().manual_seed(proxy_seed)  # a private generator leaves the global RNG alone
        self.proxies = nn.Parameter(torch.randn(num_classes, bits, generator=generator) / 8)

    def forward(self, image: torch.Tensor, text: torch.Tensor, image_logits: torch.Tensor, text_logits: torch.Tensor,
                labels: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`noise` (B, K) ±1 targets before assignment; drawn here when None (one draw serves both modalities)."""
        labels = labels.to(image.dtype)
        proxy = proxy_loss(torch.cat([image, text]), torch.cat([labels, labels]), self.proxies, self.margin)
        classification = argmax_cross_entropy(image_logits, labels) + argmax_cross_entropy(text_logits, labels)
        if noise is None:
            noise = random_signs(*image.shape)
        uniform = (alignment(image, assign_targets(image, noise)) + alignment(text, assign_targets(text, noise)))
        loss = proxy + classification - self.noise_weight * uniform
        return {"loss": loss, "proxy": proxy, "classification": classification, "uniform": uniform}
