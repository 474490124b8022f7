"""MATH's loss: likelihoods against training-set memory banks within and across image, text and label,
global-to-local MSE, quantization to a shared binary target, and contrastive alignment of the three."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from itertools import permutations

import torch
from torch import nn

from train.common import bayesian_likelihood, float32_region, info_nce, label_similarity

from .model import MATHOutput

MODALITIES = ("image", "text", "label")


class MATHLoss(nn.Module):
    """Three Ntrain×K memory banks of the global hashes (`bank_image`, `bank_text`, `bank_label`: buffers,
    checkpointed) and the total loss.

    Weights (reference names): `intra` α, `inter` β, `mse` δ, `quantization` γ, `contrastive` λ.
    """

    def __init__(self, train_labels: torch.Tensor, bits: int, intra: float = 4.0, inter: float = 13.0,
                 mse: float = 5.0, quantization: float = 7.0, contrastive: float = 57.0,
                 temperature: float = 0.07):
        super().__init__()
        self.register_buffer("train_labels", train_labels.float(), persistent=False)
        for name in MODALITIES:
            self.register_buffer(f"bank_{name}", torch.randn(len(train_labels), bits))
        self.weights = dict(intra=intra, inter=inter, mse=mse, quantization=quantization, contrastive=contrastive)
        self.temperature = temperature

    def bank(self, modality: str) -> torch.Tensor:
        return getattr(self, f"bank_{modality}")

    @torch.no_grad()
    def update_banks(self, index: torch.Tensor, out: MATHOutput,
                     gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> None:
        """Overwrite the batch's rows of every bank with its detached global hashes (`gather`: rows of all
        processes). Called before the loss, as in the reference."""
        rows = gather(index.to(self.bank_image.device))
        for name in MODALITIES:
            bank = self.bank(name)
            bank[rows] = gather(getattr(out, f"cls_{name}").detach().to(bank.dtype))

    def forward(self, out: MATHOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        with float32_region(*(getattr(out, f.name) for f in fields(out))) as tensors:
            out = MATHOutput(*tensors)
            return self._terms(out, labels)

    def _terms(self, out: MATHOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        w = self.weights
        cls = {m: getattr(out, f"cls_{m}") for m in MODALITIES}
        tok = {m: getattr(out, f"tok_{m}") for m in MODALITIES}
        res = {m: getattr(out, f"res_{m}") for m in MODALITIES}
        dtype = cls["image"].dtype
        similarity = label_similarity(self.train_labels.to(dtype), labels.to(dtype)).to(dtype)
        banks = {m: self.bank(m).to(dtype) for m in MODALITIES}

        intra = w["intra"] * sum(bayesian_likelihood(banks[m], cls[m], similarity) for m in MODALITIES)
        inter = w["inter"] * sum(bayesian_likelihood(banks[a], cls[b], similarity)
                                 for a, b in permutations(MODALITIES, 2))
        n, k = cls["image"].shape
        mse = w["mse"] * sum((cls[m].detach() - tok[m]).square().sum() for m in MODALITIES) / n
        target = torch.sign(sum(c.detach() for c in cls.values()))
        quantization = w["quantization"] * sum((0.5 * (cls[m] + tok[m]) - target).square().sum()
                                               for m in MODALITIES) / (n * k)
        contrastive = w["contrastive"] * (info_nce(res["image"], res["label"], self.temperature)
                                          + info_nce(res["text"], res["label"], self.temperature)
                                          + info_nce(res["image"], res["text"], self.temperature))
        loss = intra + inter + mse + quantization + contrastive
        return {"loss": loss, "intra": intra, "inter": inter, "mse": mse, "quantization": quantization,
                "contrastive": contrastive}
