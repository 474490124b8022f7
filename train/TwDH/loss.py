"""TwDH's loss and codes (README.md, sections Model, Loss and Encoding).

Layouts: pair probabilities are (B, K, 2) (pair k = bit k, entry 1 = probability of +1); flattened they are the
reference's (B, 2K) vectors whose pair k is entries (2k, 2k+1). Centers are (C, K) ±1, transforms (2L, 2S).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.heads import pair_codes


def onehot(codes: torch.Tensor) -> torch.Tensor:
    """±1 codes (B, K) -> pair targets (B, K, 2): −1 -> (1, 0), +1 -> (0, 1)."""
    return torch.stack([(1 - codes) / 2, (1 + codes) / 2], dim=-1)


def center_targets(labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Multi-label targets (B, K): sign of the mean center of each sample's classes.

    Tied bits take one random ±1 vector drawn per call from the global RNG (shared by the whole batch);
    a sample without any label gets −1 everywhere (the reference's NaN mean decodes to −1).
    """
    total = labels.to(centers.dtype) @ centers  # same sign as the mean; integers, so ties are exactly 0
    fill = torch.randint(0, 2, (centers.shape[1],), device=centers.device).to(centers.dtype) * 2 - 1
    targets = torch.where(total == 0, fill, total.sign())
    unlabeled = labels.sum(dim=1, keepdim=True) == 0
    return targets.masked_fill(unlabeled, -1.0)


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 outputs of an autocast forward as float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def pair_softmax(logits: torch.Tensor) -> torch.Tensor:
    """(B, 2K) logits -> (B, K, 2) probabilities, a softmax per pair."""
    return torch.softmax(logits.reshape(logits.shape[0], -1, 2), dim=-1)


def bce(pairs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """nn.BCELoss (mean over all B·2K entries) between pair probabilities and onehot(targets)."""
    return F.binary_cross_entropy(pairs, onehot(targets))


def quantization(pairs: torch.Tensor) -> torch.Tensor:
    """Q(p) = 1 − mean((2p − 1)²): 0 for one-hot pairs."""
    return 1 - (2 * pairs - 1).square().mean()


class TwDHLoss(nn.Module):
    """Fixed long and short class centers and long-to-short transforms (buffers, so checkpointed), the loss,
    and the codes of every length."""

    def __init__(self, long_centers: torch.Tensor, short_centers: dict[int, torch.Tensor],
                 transforms: dict[int, torch.Tensor], quan_alpha: float = 0.5, low_rate: float = 0.0):
        super().__init__()
        self.short_bits = tuple(sorted(short_centers))
        self.quan_alpha = quan_alpha
        self.low_rate = low_rate
        self.register_buffer("long_centers", long_centers.float())
        for bits in self.short_bits:
            self.register_buffer(f"short_centers_{bits}", short_centers[bits].float())
            self.register_buffer(f"transform_{bits}", transforms[bits].float())

    @property
    def long_bits(self) -> int:
        return self.long_centers.shape[1]

    def short_logits(self, long_pairs: torch.Tensor, bits: int) -> torch.Tensor:
        """p_long (B, L, 2) flattened to (B, 2L) times T_S (2L, 2S): the short code's pair logits (B, 2S)."""
        return long_pairs.flatten(1) @ getattr(self, f"transform_{bits}").to(long_pairs.dtype)

    def code_terms(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                   centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(½[BCE_img + BCE_txt], ½[Q_img + Q_txt]) of one code length against its centers."""
        targets = center_targets(labels.to(image.dtype), centers.to(image.dtype))
        return (bce(image, targets) + bce(text, targets)) / 2, (quantization(image) + quantization(text)) / 2

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """`image`, `text`: long pair probabilities (B, L, 2); `labels` (B, C) multi-hot.

        L = L_long + quan_alpha·L_q + low_rate·Σ_S (L_S + Q_S); the short terms are skipped when low_rate is 0.
        """
        with torch.autocast(image.device.type, enabled=False):  # BCE is not autocast-safe
            image, text = full_precision(image), full_precision(text)
            bce_long, q_long = self.code_terms(image, text, labels, self.long_centers)
            out = {"bce_long": bce_long, "quantization": q_long}
            loss = bce_long + self.quan_alpha * q_long
            if self.low_rate != 0:
                for bits in self.short_bits:
                    short_img = pair_softmax(self.short_logits(image, bits))
                    short_txt = pair_softmax(self.short_logits(text, bits))
                    bce_s, q_s = self.code_terms(short_img, short_txt, labels, getattr(self, f"short_centers_{bits}"))
                    out[f"bce_{bits}"], out[f"quantization_{bits}"] = bce_s, q_s
                    loss = loss + self.low_rate * (bce_s + q_s)
        return {"loss": loss, **out}

    def codes(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """±1 codes of every length: {"<L>": long, "<S>": short for each S}. Short bits come from the pair
        logits p_long @ T_S (the pair softmax is monotone, so it is skipped)."""
        with torch.autocast(image.device.type, enabled=False):
            image, text = full_precision(image), full_precision(text)
            sets = {str(self.long_bits): (pair_codes(image), pair_codes(text))}
            for bits in self.short_bits:
                logits = [self.short_logits(x, bits).reshape(x.shape[0], bits, 2) for x in (image, text)]
                sets[str(bits)] = (pair_codes(logits[0]), pair_codes(logits[1]))
        return sets
