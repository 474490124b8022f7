"""MITH's loss: likelihoods against training-set memory banks, quantization, contrastive alignment, distillation.

Formulas: README.md, section Loss.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from train.common import bayesian_likelihood, info_nce, label_similarity

from .model import MITHOutput

BANKS = ("cls_image", "cls_text", "tok_image", "tok_text")


def concept_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample InfoNCE between concept tokens (n, K, D): the K×K matrices a[i] b[i]ᵀ/τ, diagonal targets,
    cross-entropy over every (sample, concept) row in both directions, halved."""
    logits = a @ b.transpose(1, 2) / temperature  # (n, K, K)
    k = logits.shape[-1]
    targets = torch.arange(k, device=a.device).repeat(len(a))
    rows = F.cross_entropy(logits.reshape(-1, k), targets)
    cols = F.cross_entropy(logits.transpose(1, 2).reshape(-1, k), targets)
    return 0.5 * (rows + cols)


class MITHLoss(nn.Module):
    """The four Ntrain×K memory banks (buffers, checkpointed) and the total loss (README: Loss)."""

    def __init__(self, train_labels: torch.Tensor, bits: int, tokens_intra: float = 1.0, cls_inter: float = 10.0,
                 quantization: float = 8.0, info_nce: float = 50.0, alpha: float = 0.01, distill: float = 1.0,
                 lam: float = 0.99, temperature: float = 0.07):
        super().__init__()
        self.register_buffer("train_labels", train_labels.float(), persistent=False)
        for name in BANKS:
            self.register_buffer(f"bank_{name}", torch.randn(len(train_labels), bits))
        self.weights = dict(tokens_intra=tokens_intra, cls_inter=cls_inter, quantization=quantization,
                            info_nce=info_nce, alpha=alpha, distill=distill)
        self.lam = lam
        self.temperature = temperature

    @torch.no_grad()
    def update_banks(self, index: torch.Tensor, out: MITHOutput,
                     gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> None:
        """Overwrite the batch's rows of every bank with its detached outputs (`gather`: rows of all processes)."""
        rows = gather(index.to(self.bank_cls_image.device))
        for name in BANKS:
            bank = getattr(self, f"bank_{name}")
            bank[rows] = gather(getattr(out, name).detach().to(bank.dtype))

    def forward(self, out: MITHOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        w, lam = self.weights, self.lam
        similarity = label_similarity(self.train_labels, labels).to(self.train_labels.dtype)
        tokens_intra = w["tokens_intra"] * (bayesian_likelihood(self.bank_tok_image, out.tok_image, similarity)
                                            + bayesian_likelihood(self.bank_tok_text, out.tok_text, similarity))
        cls_inter = w["cls_inter"] * (bayesian_likelihood(self.bank_cls_image, out.cls_text, similarity)
                                      + bayesian_likelihood(self.bank_cls_text, out.cls_image, similarity))
        target = torch.sign(lam * (out.cls_image + out.cls_text) + (1 - lam) * (out.tok_image + out.tok_text)).detach()
        n, k = out.cls_image.shape
        hashes = (0.5 * (out.cls_image + out.tok_image), 0.5 * (out.cls_text + out.tok_text))
        quantization = w["quantization"] * sum((h - target).square().sum() for h in hashes) / (n * k)
        contrastive = w["info_nce"] * (info_nce(out.res_image, out.res_text, self.temperature) + w["alpha"]
                                       * concept_info_nce(out.concepts_image, out.concepts_text, self.temperature))
        distillation = w["distill"] * distillation_loss(out.cls_image, out.tok_image, out.cls_text, out.tok_text) / n
        loss = tokens_intra + cls_inter + quantization + contrastive + distillation
        return {"loss": loss, "tokens_intra": tokens_intra, "cls_inter": cls_inter, "quantization": quantization,
                "info_nce": contrastive, "distillation": distillation}


def distillation_loss(cls_image: torch.Tensor, tok_image: torch.Tensor, cls_text: torch.Tensor,
                      tok_text: torch.Tensor) -> torch.Tensor:
    """Σ(cls.detach − tok)² + 0.1·Σ(cls − tok.detach)² over both modalities: the local branch learns from the
    global one with weight 1, the global one from the local with weight 0.1."""
    total = cls_image.new_zeros(())
    for cls, tok in ((cls_image, tok_image), (cls_text, tok_text)):
        total = total + (cls.detach() - tok).square().sum() + 0.1 * (cls - tok.detach()).square().sum()
    return total
