"""CMCL's hashing network: global residual MLP + local concept cross-attention, one encoder per code length.

README.md, section Model. Batch-first everywhere: tokens (N, L, D), concept tokens (N, C, D),
masks (N, L) with True = ignore. Every part except the per-modality local branch is shared by both modalities.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, Transformer
from torch import nn

from model.clip import CLIPBackbone
from model.heads import ResidualMLPs


class LocalBranch(nn.Module):
    """Shared concept queries cross-attend to one modality's tokens (no residual), then a CLIP-style encoder."""

    def __init__(self, dim: int, heads: int, layers: int):
        super().__init__()
        self.norm_kv = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.encoder = Transformer(dim, layers, heads, act_layer=QuickGELU, batch_first=True)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(N, C, D) normalised queries and (N, L, D) tokens -> (N, C, D) concept tokens."""
        kv = self.norm_kv(tokens)
        attended = self.attention(queries, kv, kv, key_padding_mask=mask, need_weights=False)[0]
        return self.encoder(attended)


@dataclass
class CMCLOutput:
    """Head outputs of one batch. Codes are keyed by length; reconstructions (N, aux) only for the short lengths."""

    codes_image: dict[int, torch.Tensor]
    codes_text: dict[int, torch.Tensor]
    recon_image: dict[int, torch.Tensor]
    recon_text: dict[int, torch.Tensor]
    concepts_image: torch.Tensor  # (N, C, D) unit vectors, local InfoNCE
    concepts_text: torch.Tensor
    global_image: torch.Tensor  # (N, D) unit vectors, global InfoNCE
    global_text: torch.Tensor


class CMCLHead(nn.Module):
    """Fused feature f = R(pooled) + mean of the C concept tokens; h_k = tanh(E_k f); r_k = D_k(h_k) for k < aux."""

    def __init__(self, dim: int, lengths: tuple[int, ...], aux: int, concepts: int = 64, transformer_layers: int = 1,
                 res_mlp_layers: int = 2, dropout: float = 0.5):
        super().__init__()
        self.lengths, self.aux = tuple(lengths), aux
        heads = max(1, dim // 64)
        self.concepts = nn.Parameter(torch.randn(concepts, dim))
        self.norm_q = nn.LayerNorm(dim)
        self.local_image = LocalBranch(dim, heads, transformer_layers)
        self.local_text = LocalBranch(dim, heads, transformer_layers)
        self.global_mlp = ResidualMLPs(dim, res_mlp_layers, dropout)
        self.encoders = nn.ModuleDict({str(k): nn.Linear(dim, k) for k in (*self.lengths, aux)})
        self.decoders = nn.ModuleDict({str(k): nn.Sequential(nn.Linear(k, aux), nn.ReLU(), nn.Linear(aux, aux))
                                       for k in self.lengths})

    def fuse(self, pooled: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None,
             branch: LocalBranch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fused feature (N, D), global feature (N, D), concept tokens (N, C, D)) of one modality."""
        queries = self.norm_q(self.concepts).expand(len(tokens), -1, -1)
        local = branch(queries, tokens, mask)
        glob = self.global_mlp(pooled)
        return glob + local.mean(dim=1), glob, local

    def hash(self, fused: torch.Tensor) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        """Codes of every length and reconstructions of the auxiliary code from the short ones."""
        codes = {k: torch.tanh(self.encoders[str(k)](fused)) for k in (*self.lengths, self.aux)}
        recon = {k: torch.tanh(self.decoders[str(k)](codes[k])) for k in self.lengths}
        return codes, recon

    def forward(self, image_cls: torch.Tensor, image_tokens: torch.Tensor, image_mask: torch.Tensor | None,
                text_eos: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor | None) -> CMCLOutput:
        fused_i, glob_i, local_i = self.fuse(image_cls, image_tokens, image_mask, self.local_image)
        fused_t, glob_t, local_t = self.fuse(text_eos, text_tokens, text_mask, self.local_text)
        codes_i, recon_i = self.hash(fused_i)
        codes_t, recon_t = self.hash(fused_t)
        return CMCLOutput(codes_i, codes_t, recon_i, recon_t, F.normalize(local_i, dim=-1),
                          F.normalize(local_t, dim=-1), F.normalize(glob_i, dim=-1), F.normalize(glob_t, dim=-1))


class CMCLModel(nn.Module):
    """CLIP token outputs (text with the padding mask inside every layer) -> CMCLHead."""

    def __init__(self, backbone: CLIPBackbone, head: CMCLHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor, texts: torch.Tensor, text_padding: torch.Tensor) -> CMCLOutput:
        image = self.backbone.encode_image_tokens(images)
        text = self.backbone.encode_text_tokens(texts, key_padding_mask=text_padding)
        return self.head(image.pooled, image.tokens, image.mask, text.pooled, text.tokens, text.mask)
