"""Reusable hash heads and the default two-tower hash model (no method knowledge)."""
from __future__ import annotations

import torch
from torch import nn

from model.clip import CLIPBackbone


class LinearTanhHead(nn.Module):
    """`Linear(in, bits) -> Dropout -> tanh` (the "LinearHash" of the QinLab repos).

    `init="kaiming"` applies kaiming_uniform(fan_out) with zero bias (QinLab's unified repo);
    `"default"` keeps PyTorch's initialisation (the original DSPH and kalenforn).
    """

    def __init__(self, in_dim: int, bits: int, dropout: float = 0.2, init: str = "default"):
        super().__init__()
        self.fc = nn.Linear(in_dim, bits)
        self.dropout = nn.Dropout(dropout)
        if init == "kaiming":
            nn.init.kaiming_uniform_(self.fc.weight, mode="fan_out")
            nn.init.zeros_(self.fc.bias)
        elif init != "default":
            raise ValueError(f"unknown init {init!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dropout(self.fc(x)))


class PairSoftmaxHead(nn.Module):
    """K two-way softmaxes ("selecting" hash layer of DCHMT): output (B, K, 2), each pair sums to 1.

    `Linear(in, hidden) -> ReLU -> K x Linear(hidden, 2)`, implemented as one Linear(hidden, 2K).
    `init="kaiming"` initialises the weight blocks like K separate Linear(hidden, 2) layers with
    kaiming_uniform(fan_out) (fan_out = 2 per block) and zero biases; `"default"` keeps PyTorch's init.
    """

    def __init__(self, in_dim: int, bits: int, hidden: int = 128, init: str = "kaiming"):
        super().__init__()
        self.bits = bits
        self.fc = nn.Linear(in_dim, hidden)
        self.pairs = nn.Linear(hidden, 2 * bits)
        if init == "kaiming":
            for layer, fan_out in ((self.fc, hidden), (self.pairs, 2)):
                gain = nn.init.calculate_gain("leaky_relu", 0)  # kaiming_uniform_ default: a=0 -> sqrt(2)
                bound = gain * (3.0 / fan_out) ** 0.5
                nn.init.uniform_(layer.weight, -bound, bound)
                nn.init.zeros_(layer.bias)
        elif init != "default":
            raise ValueError(f"unknown init {init!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.pairs(torch.relu(self.fc(x))).view(-1, self.bits, 2)
        return torch.softmax(logits, dim=-1)


class AttentionPairHead(nn.Module):
    """Attention pair head (kalenforn's ModalityHash): self-attention on the pooled feature as a length-1
    sequence, a norm, `Linear(D, 2K)`, ReLU, and a softmax per bit pair. Output (B, K, 2).

    The norm is BatchNorm1d for images and LayerNorm for text, as in the reference. `init="kaiming"` gives the
    pair layer kaiming_uniform(fan_out) weights and zero biases (the reference); `"default"` keeps PyTorch's init.
    """

    def __init__(self, dim: int, bits: int, norm: str, heads: int = 8, init: str = "kaiming"):
        super().__init__()
        self.bits = bits
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.BatchNorm1d(dim) if norm == "batch" else nn.LayerNorm(dim)
        self.pairs = nn.Linear(dim, 2 * bits)
        if init == "kaiming":
            nn.init.kaiming_uniform_(self.pairs.weight, mode="fan_out")
            nn.init.zeros_(self.pairs.bias)
        elif init != "default":
            raise ValueError(f"unknown init {init!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token = x.reshape(x.shape[0], 1, x.shape[1])  # explicit reshape: the reference's squeeze breaks at B = 1
        attended = self.attention(token, token, token, need_weights=False)[0].reshape(x.shape[0], -1)
        logits = torch.relu(self.pairs(self.norm(attended))).reshape(-1, self.bits, 2)
        return torch.softmax(logits, dim=-1)


def pair_codes(pairs: torch.Tensor) -> torch.Tensor:
    """±1 codes from (B, K, 2) pair probabilities: +1 where the second entry wins, -1 otherwise (ties -> -1)."""
    return torch.where(pairs[..., 1] > pairs[..., 0], 1.0, -1.0)


class DualHashModel(nn.Module):
    """CLIP backbone with one head per modality on the pooled embeddings.

    `forward(images, texts)` returns the continuous head outputs `(image_out, text_out)`.
    """

    def __init__(self, backbone: CLIPBackbone, image_head: nn.Module, text_head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.image_head = image_head
        self.text_head = text_head

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.backbone.encode_image(images))

    def encode_text(self, texts: torch.Tensor) -> torch.Tensor:
        return self.text_head(self.backbone.encode_text(texts))

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(images), self.encode_text(texts)


class ResidualMLPs(nn.Module):
    """`layers` pre-LN residual blocks (MLP of width 4D) `x + Linear(4D, D)(Dropout(GELU(Linear(D, 4D)(LN(x)))))`."""

    def __init__(self, dim: int, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout),
                                                nn.Linear(4 * dim, dim)) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, mlp in zip(self.norms, self.mlps):
            x = x + mlp(norm(x))
        return x
