"""The kalenforn "DCMHT" head variant (the original head is model.heads.PairSoftmaxHead)."""
from __future__ import annotations

import torch
from torch import nn


class AttentionPairHead(nn.Module):
    """kalenforn's ModalityHash: self-attention on the pooled feature as a length-1 sequence, a norm,
    `Linear(D, 2K)` (kaiming fan_out, zero bias), ReLU, and a softmax per bit pair. Output (B, K, 2).

    The norm is BatchNorm1d for images and LayerNorm for text, as in the reference.
    """

    def __init__(self, dim: int, bits: int, norm: str, heads: int = 8):
        super().__init__()
        self.bits = bits
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.BatchNorm1d(dim) if norm == "batch" else nn.LayerNorm(dim)
        self.pairs = nn.Linear(dim, 2 * bits)
        nn.init.kaiming_uniform_(self.pairs.weight, mode="fan_out")
        nn.init.zeros_(self.pairs.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token = x.reshape(x.shape[0], 1, x.shape[1])  # explicit reshape: the reference's squeeze breaks at B = 1
        attended = self.attention(token, token, token, need_weights=False)[0].reshape(x.shape[0], -1)
        logits = torch.relu(self.pairs(self.norm(attended))).reshape(-1, self.bits, 2)
        return torch.softmax(logits, dim=-1)
