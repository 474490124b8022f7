"""DSPH's proxy loss ("HyP"): pull codes to the proxies of their labels, push them from the others.

Formulas and the threshold table: README.md, section Loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# threshold[(K, k)] = 1 - 2 d / K, d the best known minimum distance of a binary linear [K, k] code
# (the entries of the reference codetable.xlsx that 16-128 bit codes and up to 256 classes need).
_THRESHOLDS = {
    16: (-1, -0.25, 0, 0, 0, 0.25, 0.25, 0.375),
    32: (-1, -0.3125, -0.125, 0, 0, 0, 0.125, 0.1875),
    64: (-1, -0.3125, -0.125, -0.03125, 0, 0, 0, 0.09375),
    128: (-1, -0.328125, -0.125, -0.0625, 0, 0, 0, 0),
}


def code_threshold(bits: int, num_classes: int) -> float | None:
    """δ for `bits`-bit codes and `num_classes` proxies (k = ceil(log2 C)), or None outside the table."""
    k = max(1, math.ceil(math.log2(num_classes)))
    row = _THRESHOLDS.get(bits)
    if row is None or k > len(row):
        return None
    return float(row[k - 1])


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
