"""MITH's hashing network: global concept learning (GCL) and local concept transforming (LCT).

Structure: README.md, section Model. Every tensor is batch-first: tokens (N, L, D), concept
tokens (N, K, D), masks (N, L) with True = ignore.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, Transformer
from torch import nn

from model.clip import CLIPBackbone
from model.concepts import GlobalConceptLearning
from model.positions import sinusoidal_positions


def aggregate_tokens(tokens: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor | None,
                     top_k: int) -> torch.Tensor:
    """Localized token aggregation: (N, L, D) tokens and (N, L, K) token-concept scores -> (N, K, D).

    Masked tokens and non-positive scores are dropped; each token keeps its `top_k` best concepts
    (every score >= the k-th largest, so ties keep more); each concept is the softmax-over-tokens
    weighted sum of its tokens, and a concept no token selected is the zero vector.
    """
    scores = scores.detach()
    drop = scores <= 0
    if mask is not None:
        drop = drop | mask[:, :, None]
    scores = scores.masked_fill(drop, float("-inf"))
    kth = scores.topk(min(top_k, scores.shape[-1]), dim=-1).values[..., -1:]
    scores = scores.masked_fill(scores < kth, float("-inf"))
    weights = torch.softmax(scores, dim=1).nan_to_num(nan=0.0)  # an all -inf column gives NaN -> 0
    return weights.transpose(1, 2) @ tokens


class BitwiseHashing(nn.Module):
    """K separate `Linear(D, 1)`, the k-th on concept token k, then tanh: (N, K, D) -> (N, K).

    Stored as one (K, D) weight and (K,) bias, initialised like K default `nn.Linear(D, 1)`.
    """

    def __init__(self, dim: int, bits: int):
        super().__init__()
        bound = 1 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(bits, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(bits).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh((x * self.weight).sum(dim=-1) + self.bias)


class LocalConceptTransforming(nn.Module):
    """Token aggregation to K concept tokens, position encoding, a CLIP-style transformer, bitwise hashing."""

    def __init__(self, dim: int, bits: int, layers: int = 2, top_k: int = 8):
        super().__init__()
        self.top_k = top_k
        self.register_buffer("positions", sinusoidal_positions(bits, dim), persistent=False)
        self.transformer = Transformer(dim, layers, max(1, dim // 64), act_layer=QuickGELU, batch_first=True)
        self.hashing = BitwiseHashing(dim, bits)

    def forward(self, tokens: torch.Tensor, scores: torch.Tensor,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(bitwise hash (N, K), transformed concept tokens (N, K, D))."""
        concepts = aggregate_tokens(tokens, scores, mask, self.top_k) + self.positions.to(tokens.dtype)
        concepts = self.transformer(concepts)
        return self.hashing(concepts), concepts


@dataclass
class MITHOutput:
    """Head outputs of one batch: hashes (N, K) in (-1, 1), unit vectors for the contrastive terms."""

    cls_image: torch.Tensor
    cls_text: torch.Tensor
    tok_image: torch.Tensor
    tok_text: torch.Tensor
    res_image: torch.Tensor  # (N, D) normalised GCL features
    res_text: torch.Tensor
    concepts_image: torch.Tensor  # (N, K, D) normalised projected concept tokens
    concepts_text: torch.Tensor


class MITHHead(nn.Module):
    """One GCL shared by both modalities, one LCT and one concept projection per modality."""

    def __init__(self, dim: int, bits: int, top_k: int = 8, transformer_layers: int = 2, res_mlp_layers: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        self.gcl = GlobalConceptLearning(dim, bits, res_mlp_layers, dropout)
        self.lct_image = LocalConceptTransforming(dim, bits, transformer_layers, top_k)
        self.lct_text = LocalConceptTransforming(dim, bits, transformer_layers, top_k)
        self.proj_image = nn.Linear(dim, dim)
        self.proj_text = nn.Linear(dim, dim)

    def forward(self, image_cls: torch.Tensor, image_tokens: torch.Tensor, image_mask: torch.Tensor | None,
                text_eos: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor | None) -> MITHOutput:
        res_image, cls_image = self.gcl(image_cls)
        res_text, cls_text = self.gcl(text_eos)
        with torch.no_grad():  # token-concept scores carry no gradient
            scores_image = self.gcl(image_tokens)[1]
            scores_text = self.gcl(text_tokens)[1]
        tok_image, concepts_image = self.lct_image(image_tokens, scores_image, image_mask)
        tok_text, concepts_text = self.lct_text(text_tokens, scores_text, text_mask)
        return MITHOutput(cls_image, cls_text, tok_image, tok_text, F.normalize(res_image, dim=-1),
                          F.normalize(res_text, dim=-1), F.normalize(self.proj_image(concepts_image), dim=-1),
                          F.normalize(self.proj_text(concepts_text), dim=-1))


class MITHModel(nn.Module):
    """CLIP token outputs (text with the padding mask inside every layer) -> MITHHead."""

    def __init__(self, backbone: CLIPBackbone, head: MITHHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor, texts: torch.Tensor, text_padding: torch.Tensor) -> MITHOutput:
        image = self.backbone.encode_image_tokens(images)
        text = self.backbone.encode_text_tokens(texts, key_padding_mask=text_padding)
        return self.head(image.pooled, image.tokens, image.mask, text.pooled, text.tokens, text.mask)
