"""DScPH losses: the CPF proxy ratio loss, the bit-variance quantisation term and their sum.

Formulas: README.md, section Loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .adatriplet import AutoMarginTriplet
from .rotation import HouseholderRotation

# hard-coded constants of the reference CPF: offset b, penalty scales s_p, s_n and the negative centre μ
CPF_B, CPF_SP, CPF_SN, CPF_MU = 2.0, 1.3, 1.3, 1.0


def cpf_loss(codes: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor, tau: float, psi: float) -> torch.Tensor:
    """1 - tp / (tp + Lp + Ln), every term summed over the whole batch.

    tp = 2 Σ y·max(cos, 0) + b; Lp = Σ y (1 - cos) sg[exp(s_p (1 - cos))];
    Ln = Σ_{cos > τ} (1 - y)(cos - ψ) sg[exp(s_n (cos - μ))], with cos the cosine of each code to each class proxy.
    """
    cos = F.normalize(codes, dim=1) @ F.normalize(proxies, dim=1).T
    reward = 2 * (labels * cos.clamp(min=0)).sum() + CPF_B
    pull = (labels * (1 - cos) * torch.exp(CPF_SP * (1 - cos)).detach()).sum()
    push = (1 - labels) * (cos - psi) * torch.exp(CPF_SN * (cos - CPF_MU)).detach()
    push = torch.where(cos > tau, push, torch.zeros_like(push)).sum()
    return 1 - reward / (reward + pull + push)


def bit_variance_loss(z: torch.Tensor) -> torch.Tensor:
    """mean σ(z)(1 - σ(z)): on unit vectors it favours equal-magnitude coordinates (binary-like codes)."""
    s = torch.sigmoid(z)
    return (s * (1 - s)).mean()


class CPFLoss(nn.Module):
    """Learnable class proxies W (C, K), xavier-uniform, shared by both modalities."""

    def __init__(self, num_classes: int, bits: int, tau: float, psi: float):
        super().__init__()
        self.tau, self.psi = tau, psi
        self.proxies = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_classes, bits)))

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cpf_loss(codes, self.proxies, labels, self.tau, self.psi)


class DScPHLoss(nn.Module):
    """CPF(I) + CPF(T) + L_q(I) + L_q(T) [+ AdaTriplet-AM(I) + AdaTriplet-AM(T), original repository].

    Holds the proxies and the Householder rotation (applied to the codes in the quantisation term only).
    """

    def __init__(self, num_classes: int, bits: int, tau: float, psi: float, train_rotation: bool,
                 adatriplet: AutoMarginTriplet | None = None):
        super().__init__()
        self.cpf = CPFLoss(num_classes, bits, tau, psi)
        self.rotation = HouseholderRotation(bits).requires_grad_(train_rotation)
        self.adatriplet = adatriplet

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
                estimate_margins: bool = False) -> dict[str, torch.Tensor]:
        """`estimate_margins`: the epoch's first batch, where AdaTriplet re-estimates ε and β_n between modalities."""
        out = {"cpf": self.cpf(image, labels) + self.cpf(text, labels),
               "quant_image": bit_variance_loss(F.normalize(self.rotation(image), dim=1)),
               "quant_text": bit_variance_loss(F.normalize(self.rotation(text), dim=1))}
        if self.adatriplet is not None:
            out["triplet_image"] = self.adatriplet(image, labels)
            if estimate_margins:
                self.adatriplet.estimate(image, labels)
            out["triplet_text"] = self.adatriplet(text, labels)
        out["loss"] = sum(out.values())
        return out
