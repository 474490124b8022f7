"""DPSaH's loss: quadruplet margin losses over all mined quadruplets, a classifier cross-entropy on codes with
randomly replaced bits, and a bit-balance term."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from train.common import float32_region, label_similarity

CLASSIFIER_INPUTS = ("own", "image")
BALANCE_ON = ("codes", "labels")


def quadruplet_loss(anchor: torch.Tensor, other: torch.Tensor, labels: torch.Tensor,
                    margin: float = 0.3) -> tuple[torch.Tensor, int]:
    """Mean over the mined quadruplets of relu(d_aj − d_an + m) + relu(d_ak − d_an + m); returns (loss, count).

    d = −cos between anchor rows and `other` rows. Quadruplets (a, j, k, n): j < k two positives of a (share a
    label with it, j, k ≠ a), n a negative (shares none). All are kept except those where both hinges are
    inactive, (d_an − d_aj > m) and (d_an − d_ak > m): those add nothing to the sum but, kept, would enter the
    count. Computed from (a, j, n) triplets without listing the O(B⁴) quadruplets: every positive j pairs with
    the P_a − 1 others. No quadruplet gives a zero loss (with a graph) and count 0.
    """
    d = -(F.normalize(anchor, dim=1) @ F.normalize(other, dim=1).T)
    shares = label_similarity(labels)
    negative = ~shares
    positive = shares.clone()
    positive.fill_diagonal_(False)
    per_anchor = positive.sum(dim=1)
    valid = positive[:, :, None] & negative[:, None, :]  # (a, j, n)
    hinge = torch.relu(d[:, :, None] - d[:, None, :] + margin) * valid
    total = ((per_anchor - 1).clamp(min=0)[:, None, None] * hinge).sum()
    with torch.no_grad():
        easy = ((d[:, None, :] - d[:, :, None]) > margin) & valid  # both-inactive test of the miner, per j
        c = easy.sum(dim=1)  # (a, n): easy positives of anchor a against negative n
        pairs = per_anchor * (per_anchor - 1) // 2
        count = int(((pairs[:, None] - c * (c - 1) // 2) * negative).sum())
    return (total / count if count else total * 0.0), count


def bit_noise(batch: int, bits: int, ratio: float = 0.3,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random bit replacement (the reference's BNI draw): l = int(bits·ratio) positions per row, one less if
    batch·l is odd; the batch·l new values are half −1 and half +1 in random order. Returns (mask (B, K) bool,
    values (B, K): ±1 where masked, 0 elsewhere), on the generator's device (CPU without one)."""
    device = generator.device if generator is not None else torch.device("cpu")
    per_row = int(bits * ratio)
    if batch * per_row % 2:
        per_row -= 1
    signs = torch.tensor([-1.0, 1.0], device=device).repeat_interleave(batch * per_row // 2)
    signs = signs[torch.randperm(len(signs), generator=generator, device=device)].view(batch, per_row)
    columns = torch.rand(batch, bits, generator=generator, device=device).argsort(dim=1)[:, :per_row]
    mask = torch.zeros(batch, bits, dtype=torch.bool, device=device).scatter_(1, columns, True)
    values = torch.zeros(batch, bits, device=device).scatter_(1, columns, signs)
    return mask, values


def apply_bit_noise(codes: torch.Tensor, mask: torch.Tensor, values: torch.Tensor,
                    ratio: float = 0.3) -> torch.Tensor:
    """Codes scaled by 1/(1 − ratio), the masked entries replaced by `values` (no gradient reaches them)."""
    return torch.where(mask.to(codes.device), values.to(codes), codes / (1 - ratio))


def balance_penalty(codes: torch.Tensor) -> torch.Tensor:
    """mean_k |mean_b (h_bk + 1)/2 − ½|: each bit's mean over the batch, codes read in [0, 1], away from ½."""
    return ((codes + 1) / 2).mean(dim=0).sub(0.5).abs().mean()


class DPSaHLoss(nn.Module):
    """Quadruplet losses (image–image, text–text, image anchors against texts) + classifier cross-entropy on
    bit-noised codes + balance. Holds the classifier `Linear(bits, classes)` (checkpointed).

    `classifier_input`: "own" (default) classifies the noised text codes for the text term; "image" is the
    reference, which feeds a second noise draw of the image codes there. `balance_on`: "codes" (default) applies
    the balance penalty to the image and text codes (mean of the two); "labels" is the reference's penalty on
    the label matrix, a constant.
    """

    def __init__(self, bits: int, num_classes: int, margin: float = 0.3, flip_ratio: float = 0.3,
                 classifier_weight: float = 0.1, balance_weight: float = 0.3, classifier_input: str = "own",
                 balance_on: str = "codes"):
        super().__init__()
        if classifier_input not in CLASSIFIER_INPUTS:
            raise ValueError(f"classifier_input must be one of {CLASSIFIER_INPUTS}, got {classifier_input!r}")
        if balance_on not in BALANCE_ON:
            raise ValueError(f"balance_on must be one of {BALANCE_ON}, got {balance_on!r}")
        self.classifier = nn.Linear(bits, num_classes)
        self.margin, self.flip_ratio = margin, flip_ratio
        self.classifier_weight, self.balance_weight = classifier_weight, balance_weight
        self.classifier_input, self.balance_on = classifier_input, balance_on

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                noise: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """`noise`: ((mask, values) for the image term, (mask, values) for the text term), drawn with
        `bit_noise(…, generator)` when not given."""
        with float32_region(image, text, labels) as (image, text, labels):
            if noise is None:
                noise = tuple(bit_noise(len(image), image.shape[1], self.flip_ratio, generator) for _ in range(2))
            quad_image, _ = quadruplet_loss(image, image, labels, self.margin)
            quad_text, _ = quadruplet_loss(text, text, labels, self.margin)
            quad_cross, _ = quadruplet_loss(image, text, labels, self.margin)
            second = text if self.classifier_input == "own" else image
            logits_image = self.classifier(apply_bit_noise(image, *noise[0], self.flip_ratio))
            logits_text = self.classifier(apply_bit_noise(second, *noise[1], self.flip_ratio))
            ce_image = F.cross_entropy(logits_image, labels)
            ce_text = F.cross_entropy(logits_text, labels)
            if self.balance_on == "codes":
                balance = 0.1 * 0.5 * (balance_penalty(image) + balance_penalty(text))
            else:
                balance = 0.1 * balance_penalty(2 * labels - 1)
            loss = (quad_image + quad_text + quad_cross + self.classifier_weight * (ce_image + ce_text)
                    + self.balance_weight * balance)
        return {"loss": loss, "quad_image": quad_image, "quad_text": quad_text, "quad_cross": quad_cross,
                "ce_image": ce_image, "ce_text": ce_text, "balance": balance}
