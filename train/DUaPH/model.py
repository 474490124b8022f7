"""DUaPH's model: CLIP, a tanh hash head per modality, and an uncertainty module on each code.

README.md, section Model. The uncertainty modules map a K-bit tanh code to a diagonal
Gaussian (μ, σ²); they only feed the uncertainty loss and play no part in the binary codes.
"""
from __future__ import annotations

import torch
from torch import nn

from model.clip import CLIPBackbone
from model.heads import DualHashModel, LinearTanhHead


class UncertaintyModule(nn.Module):
    """μ = BN(Linear(h)); log σ² = γ·BN'(Linear'(h)) + β (BN' without affine, γ, β learnable scalars); σ² = 1e-6 + exp."""

    def __init__(self, bits: int, gamma: float = 1e-4, beta: float = -7.0):
        super().__init__()
        self.fc_mu = nn.Linear(bits, bits)
        self.fc_log_sigma_sq = nn.Linear(bits, bits)
        # momentum 0.995 is the reference's TensorFlow-style value; the running statistics are never used
        self.bn_mu = nn.BatchNorm1d(bits, eps=1e-3, momentum=0.995)
        self.bn_sigma = nn.BatchNorm1d(bits, eps=1e-3, momentum=0.995, affine=False)
        self.gamma = nn.Parameter(torch.tensor(gamma))
        self.beta = nn.Parameter(torch.tensor(beta))

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.bn_mu(self.fc_mu(codes))
        log_sigma_sq = self.gamma * self.bn_sigma(self.fc_log_sigma_sq(codes)) + self.beta
        return mu, 1e-6 + torch.exp(log_sigma_sq)


class DUaPHModel(DualHashModel):
    """`forward(images, texts)` -> tanh codes (image, text); `uncertainty_*` give (μ, σ²) of a code batch."""

    def __init__(self, backbone: CLIPBackbone, bits: int, dropout: float = 0.2, head_init: str = "kaiming"):
        dim = backbone.embed_dim
        super().__init__(backbone, LinearTanhHead(dim, bits, dropout, init=head_init),
                         LinearTanhHead(dim, bits, dropout, init=head_init))
        self.uncertainty_image = UncertaintyModule(bits)
        self.uncertainty_text = UncertaintyModule(bits)
