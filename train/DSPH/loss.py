"""DSPH's proxy loss ("HyP"): pull codes to the proxies of their labels, push them from the others.

Formulas and the threshold table: README.md, section Loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProxyLoss(nn.Module):
    """Learnable class proxies (C, K) shared by both modalities, and the DSPH loss on tanh codes."""

    def __init__(self, num_classes: int, bits: int, threshold: float, alpha: float = 0.8, proxy_seed: int = 0):
        super().__init__()
        self.threshold = threshold
        self.alpha = alpha
        proxies = torch.empty(num_classes, bits)
        # kaiming_normal(fan_out) = N(0, 2 / C); a private generator keeps the global RNG untouched
        nn.init.kaiming_normal_(proxies, mode="fan_out", generator=torch.Generator().manual_seed(proxy_seed))
        self.proxies = nn.Parameter(proxies)

    def proxy_terms(self, codes: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean of 1 - cos over present classes, mean of relu(cos - δ) over absent classes)."""
        cos = F.normalize(codes, dim=1) @ F.normalize(self.proxies, dim=1).T
        positive, negative = labels == 1, labels == 0
        pull = (1 - cos)[positive].sum() / positive.sum().clamp(min=1)
        push = F.relu(cos - self.threshold)[negative].sum() / negative.sum().clamp(min=1)
        return pull, push

    def regulariser(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """α × mean relu(cos - δ) over label-disjoint pairs of multi-label samples, for I-I, T-T and I-T."""
        multi = labels.sum(dim=1) > 1
        if self.alpha <= 0 or multi.sum() < 2:
            return image.new_zeros(())
        y = labels[multi]
        disjoint = (y @ y.T) == 0
        if not disjoint.any():
            return image.new_zeros(())
        x_hat, t_hat = F.normalize(image[multi], dim=1), F.normalize(text[multi], dim=1)
        total = image.new_zeros(())
        for a, b in ((x_hat, x_hat), (t_hat, t_hat), (x_hat, t_hat)):
            total = total + F.relu(a @ b.T - self.threshold)[disjoint].mean()
        return self.alpha * total

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        pull_i, push_i = self.proxy_terms(image, labels)
        pull_t, push_t = self.proxy_terms(text, labels)
        reg = self.regulariser(image, text, labels)
        loss = pull_i + push_i + pull_t + push_t + reg
        return {"loss": loss, "proxy_image": pull_i + push_i, "proxy_text": pull_t + push_t, "regulariser": reg}
