"""MATH's hashing network: a shared global concept module, token hashing per modality, and the label branch.

Three "modalities" go through one CLIP: the image, the caption, and the label text (the item's class names
as one sentence, see `label_text.py`). Every tensor is batch-first: tokens (N, L, D), pooled features (N, D).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, Transformer
from torch import nn

from model.clip import CLIPBackbone
from model.concepts import GlobalConceptLearning
from model.positions import sinusoidal_positions


class LabelModalityAttention(nn.Module):
    """Multi-label modality enhanced attention (parameter-free), over the batch:

    `l + softmax(l Iᵀ/√D) I + softmax(l Tᵀ/√D) T`, queries the label features l (n, D), keys and values the
    image features I and the text features T (M, D) of the whole batch (M = n in one process; under torchrun
    the gathered global batch, so every label attends to every item as with one process).
    """

    def forward(self, label: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        scale = label.shape[-1] ** -0.5
        from_image = torch.softmax(label @ image.T * scale, dim=-1) @ image
        from_text = torch.softmax(label @ text.T * scale, dim=-1) @ text
        return label + from_image + from_text


class TokenHashing(nn.Module):
    """MATH's local branch: sinusoidal positions, a CLIP-style transformer over all tokens (no mask), the mean
    over the tokens, then `tanh(Linear(D, K))`: (N, L, D) -> (N, K).

    The reference applies K separate `Linear(D, 1)` to every token and averages them over the tokens;
    a linear map commutes with the mean, and `nn.Linear(D, K)` draws the same initial distribution.
    """

    def __init__(self, dim: int, bits: int, layers: int = 2, max_tokens: int = 64):
        super().__init__()
        self.register_buffer("positions", sinusoidal_positions(max_tokens, dim), persistent=False)
        self.transformer = Transformer(dim, layers, max(1, dim // 64), act_layer=QuickGELU, batch_first=True)
        self.hashing = nn.Linear(dim, bits)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > len(self.positions):
            raise ValueError(f"{length} tokens, the position table has {len(self.positions)}")
        x = self.transformer(tokens + self.positions[:length].to(tokens.dtype))
        return torch.tanh(self.hashing(x.mean(dim=1)))


@dataclass
class MATHOutput:
    """Head outputs of one batch: global (`cls_*`) and token (`tok_*`) hashes (N, K) in (-1, 1), and the
    normalised global features (`res_*`, (N, D)) of the contrastive terms, for image, text and label."""

    cls_image: torch.Tensor
    cls_text: torch.Tensor
    cls_label: torch.Tensor
    tok_image: torch.Tensor
    tok_text: torch.Tensor
    tok_label: torch.Tensor
    res_image: torch.Tensor
    res_text: torch.Tensor
    res_label: torch.Tensor


class MATHHead(nn.Module):
    """One global concept module shared by image, text and label; one token hashing module per modality;
    the label features are enriched by `LabelModalityAttention` before the shared module."""

    def __init__(self, dim: int, bits: int, transformer_layers: int = 2, res_mlp_layers: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        self.gcl = GlobalConceptLearning(dim, bits, res_mlp_layers, dropout)
        self.tokens_image = TokenHashing(dim, bits, transformer_layers)
        self.tokens_text = TokenHashing(dim, bits, transformer_layers)
        self.tokens_label = TokenHashing(dim, bits, transformer_layers)
        self.label_attention = LabelModalityAttention()

    def hashes(self, image_cls: torch.Tensor, image_tokens: torch.Tensor, text_eos: torch.Tensor,
               text_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image and text only (test time): (cls_image, tok_image, cls_text, tok_text)."""
        return (self.gcl(image_cls)[1], self.tokens_image(image_tokens), self.gcl(text_eos)[1],
                self.tokens_text(text_tokens))

    def forward(self, image_cls: torch.Tensor, image_tokens: torch.Tensor, text_eos: torch.Tensor,
                text_tokens: torch.Tensor, label_eos: torch.Tensor, label_tokens: torch.Tensor,
                keys: tuple[torch.Tensor, torch.Tensor] | None = None) -> MATHOutput:
        """`keys`: the (image_cls, text_eos) rows the label attention reads; default this batch's."""
        key_image, key_text = keys if keys is not None else (image_cls, text_eos)
        label = self.label_attention(label_eos, key_image, key_text)
        res_image, cls_image = self.gcl(image_cls)
        res_text, cls_text = self.gcl(text_eos)
        res_label, cls_label = self.gcl(label)
        return MATHOutput(cls_image, cls_text, cls_label, self.tokens_image(image_tokens),
                          self.tokens_text(text_tokens), self.tokens_label(label_tokens),
                          F.normalize(res_image, dim=-1), F.normalize(res_text, dim=-1),
                          F.normalize(res_label, dim=-1))


class MATHModel(nn.Module):
    """CLIP token outputs (texts with their padding mask inside every text layer) -> MATHHead.

    Captions and label texts go through the same CLIP text encoder.
    """

    def __init__(self, backbone: CLIPBackbone, head: MATHHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor, texts: torch.Tensor, text_padding: torch.Tensor,
                label_texts: torch.Tensor, label_padding: torch.Tensor,
                gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> MATHOutput:
        """Training forward; `label_texts` (N, L) are the tokenised label sentences of the batch's items.

        `gather` (differentiable, rows of every process) gives the label attention the global batch's
        image and text features under torchrun; without it the attention reads this batch.
        """
        image = self.backbone.encode_image_tokens(images)
        text = self.backbone.encode_text_tokens(texts, key_padding_mask=text_padding)
        label = self.backbone.encode_text_tokens(label_texts, key_padding_mask=label_padding)
        keys = (gather(image.pooled), gather(text.pooled)) if gather is not None else None
        return self.head(image.pooled, image.tokens, text.pooled, text.tokens, label.pooled, label.tokens, keys)

    def hashes(self, images: torch.Tensor, texts: torch.Tensor,
               text_padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Test-time forward without labels: (cls_image, tok_image, cls_text, tok_text); codes are
        sign(cls + tok) per modality."""
        image = self.backbone.encode_image_tokens(images)
        text = self.backbone.encode_text_tokens(texts, key_padding_mask=text_padding)
        return self.head.hashes(image.pooled, image.tokens, text.pooled, text.tokens)
