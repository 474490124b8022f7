"""CMCL's loss: asymmetric likelihoods against per-length code banks, quantization to epoch-wise binary targets,
local and global InfoNCE, and reconstruction of the auxiliary long code from every short code.

Formulas: README.md, section Loss.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from train.common import bayesian_likelihood, info_nce, label_similarity

from .model import CMCLOutput


def quantization(codes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Q(h, B) = ||h − B||² / (m·k)."""
    return (codes - targets).square().mean()


def local_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per pair, the C×C matrix a[i] b[i]ᵀ/τ of concept tokens (m, C, D) with diagonal targets; cross-entropy
    over all m·C rows and over all m·C columns, halved."""
    logits = a @ b.transpose(1, 2) / temperature
    c = logits.shape[-1]
    targets = torch.arange(c, device=a.device).repeat(len(a))
    return 0.5 * (F.cross_entropy(logits.reshape(-1, c), targets)
                  + F.cross_entropy(logits.transpose(1, 2).reshape(-1, c), targets))


class CMCLLoss(nn.Module):
    """Per length k: banks U_k (image), V_k (text) of continuous codes and binary targets B_k, all N×k buffers.

    Protocol: `update_banks` writes the batch's detached codes into U_k, V_k before the loss; `refresh_targets`
    sets B_k = sign(U_k + V_k) at the end of each epoch (the first epoch uses the random initial B_k).
    """

    def __init__(self, train_labels: torch.Tensor, lengths: tuple[int, ...], aux: int, intra: float = 0.005,
                 inter: float = 5.0, quan: float = 1.0, lam: float = 1.0, info_nce: float = 5.0, mu: float = 20.0,
                 recon: float = 0.005, tau_local: float = 0.07, tau_global: float = 0.07):
        super().__init__()
        self.lengths, self.aux = tuple(lengths), aux
        self.register_buffer("train_labels", train_labels.float(), persistent=False)
        for k in (*self.lengths, aux):
            image, text = torch.randn(len(train_labels), k), torch.randn(len(train_labels), k)
            self.register_buffer(f"bank_image_{k}", image)
            self.register_buffer(f"bank_text_{k}", text)
            self.register_buffer(f"target_{k}", torch.sign(image + text))
        self.weights = dict(intra=intra, inter=inter, quan=quan, lam=lam, info_nce=info_nce, mu=mu, recon=recon)
        self.tau_local, self.tau_global = tau_local, tau_global

    def banks(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(U_k, V_k, B_k)."""
        return getattr(self, f"bank_image_{k}"), getattr(self, f"bank_text_{k}"), getattr(self, f"target_{k}")

    @torch.no_grad()
    def update_banks(self, index: torch.Tensor, out: CMCLOutput,
                     gather: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> None:
        """U_k[index] ← h_k^I, V_k[index] ← h_k^T (detached) for every length (`gather`: rows of all processes)."""
        rows = gather(index.to(self.train_labels.device))
        for k in (*self.lengths, self.aux):
            image, text, _ = self.banks(k)
            image[rows] = gather(out.codes_image[k].detach().to(image.dtype))
            text[rows] = gather(out.codes_text[k].detach().to(text.dtype))

    @torch.no_grad()
    def refresh_targets(self) -> None:
        """B_k ← sign(U_k + V_k) for every length."""
        for k in (*self.lengths, self.aux):
            image, text, target = self.banks(k)
            target.copy_(torch.sign(image + text))

    def terms(self, out: CMCLOutput, labels: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every weighted term of the loss, by name (`intra_image_16`, `inter_16`, `quan_16`, ..., `recon_text_64`)."""
        w = self.weights
        dtype = self.train_labels.dtype
        similarity = label_similarity(self.train_labels, labels).to(dtype)
        terms: dict[str, torch.Tensor] = {}
        for k in (*self.lengths, self.aux):
            image_bank, text_bank, target = self.banks(k)
            h_i, h_t, b = out.codes_image[k], out.codes_text[k], target[index]
            scale = w["mu"] if k == self.aux else 1.0
            terms[f"intra_image_{k}"] = scale * w["intra"] * bayesian_likelihood(image_bank, h_i, similarity)
            terms[f"intra_text_{k}"] = scale * w["intra"] * bayesian_likelihood(text_bank, h_t, similarity)
            terms[f"inter_{k}"] = scale * w["inter"] * (bayesian_likelihood(image_bank, h_t, similarity)
                                                         + bayesian_likelihood(text_bank, h_i, similarity))
            terms[f"quan_{k}"] = scale * w["quan"] * (quantization(h_i, b) + quantization(h_t, b))
        terms["local_nce"] = w["lam"] * local_info_nce(out.concepts_image, out.concepts_text, self.tau_local)
        terms["global_nce"] = w["lam"] * w["info_nce"] * info_nce(out.global_image, out.global_text, self.tau_global)
        aux_target = getattr(self, f"target_{self.aux}")[index]
        for k in self.lengths:
            for name, recon in (("image", out.recon_image[k]), ("text", out.recon_text[k])):
                terms[f"recon_{name}_{k}"] = w["mu"] * w["recon"] * (aux_target - recon).square().sum() / len(recon)
        return terms

    def forward(self, out: CMCLOutput, labels: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The total loss and its parts summed over lengths (for the log)."""
        terms = self.terms(out, labels, index)
        groups = {"likelihood": ("intra_", "inter_"), "quantization": ("quan_",), "local_nce": ("local_nce",),
                  "global_nce": ("global_nce",), "reconstruction": ("recon_",)}
        logs = {group: sum(v for key, v in terms.items() if key.startswith(prefixes))
                for group, prefixes in groups.items()}
        return {"loss": sum(terms.values()), **logs}
