"""Soft Mixture of Experts (Puigcerver et al., arXiv 2308.00951) and the post-norm decoder layer using it.

Written from the Soft-MoE paper and the UMoED README (section Model); shapes are batch-first everywhere.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class SoftMoE(nn.Module):
    """Soft-MoE: every slot takes a softmax-over-tokens mix of the inputs, every expert is an affine map of
    its slots, and every token takes a softmax-over-slots mix of the slot outputs.

    Shapes: x (B, M, d_in) -> (B, M, d_out); n experts with p slots each.
    Init as the reference: kaiming_uniform(a=√5) of the 3-D tensors, so Φ (d_in, n, p) has bound 1/√(n·p)
    and the expert weights (n, d_in, d_out) have bound 1/√(d_in·d_out) (experts start close to zero).
    """

    def __init__(self, d_in: int, d_out: int, experts: int, slots: int):
        super().__init__()
        self.phi = nn.Parameter(torch.empty(d_in, experts, slots))
        self.weight = nn.Parameter(torch.empty(experts, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(experts, d_out))
        nn.init.kaiming_uniform_(self.phi, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        bound = 1 / math.sqrt(d_in * d_out)  # the fan-in torch computes for the 3-D weight
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.einsum("bmd,dnp->bmnp", x, self.phi)
        dispatch = logits.softmax(dim=1)  # over the M tokens, per slot
        combine = logits.flatten(2).softmax(dim=-1).view_as(logits)  # over all n·p slots, per token
        slots = torch.einsum("bmd,bmnp->bnpd", x, dispatch)
        outputs = torch.einsum("bnpd,nde->bnpe", slots, self.weight) + self.bias[None, :, None, :]
        return torch.einsum("bnpe,bmnp->bme", outputs, combine)


class SoftMoEDecoderLayer(nn.Module):
    """Post-norm transformer decoder layer whose second feed-forward linear is a Soft-MoE.

    self-attention -> add & LN -> cross-attention on `memory` -> add & LN ->
    Linear(d, ff) -> ReLU -> Dropout -> SoftMoE(ff -> d) -> Dropout -> add & LN.
    One dropout rate serves the residual branches, the feed-forward and the attention weights.
    """

    def __init__(self, d_model: int, heads: int, dim_feedforward: int, experts: int, slots: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.linear = nn.Linear(d_model, dim_feedforward)
        self.moe = SoftMoE(dim_feedforward, d_model, experts, slots)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor,
                memory_key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x, x, x, need_weights=False)[0]))
        attended = self.cross_attn(x, memory, memory, key_padding_mask=memory_key_padding_mask, need_weights=False)[0]
        x = self.norm2(x + self.dropout(attended))
        hidden = self.dropout(torch.relu(self.linear(x)))
        return self.norm3(x + self.dropout(self.moe(hidden)))
