"""UMoED's model: CLIP token sequences -> one shared query decoder -> per-position symbol logits -> codes."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from model.clip import CLIPBackbone

from .moe import SoftMoEDecoderLayer


class TokenDecoderHash(nn.Module):
    """M learned queries (std-1 normal) cross-attend to a token sequence through a stack of decoder layers;
    `Linear(d, V)` turns each query's output into logits over a vocabulary of V symbols. Output (B, M, V).

    No positional information is added to the memory, so the output does not depend on the token order.
    `memory_dim != d_model` puts `Linear(memory_dim, d_model) + ReLU` on the memory (the reference's hidden_dim).
    `layer_init="copy"` starts every decoder layer as a copy of the first, as the reference's decoder stack does
    (it deep-copies one layer); "independent" initialises each layer with its own random draw.
    """

    def __init__(self, memory_dim: int, queries: int, vocabulary: int, d_model: int, layers: int, heads: int,
                 dim_feedforward: int, experts: int, slots: int, dropout: float, moe: bool = True,
                 layer_init: str = "copy"):
        super().__init__()
        if layer_init not in ("copy", "independent"):
            raise ValueError(f"layer_init must be 'copy' or 'independent', not {layer_init!r}")
        self.input = nn.Sequential(nn.Linear(memory_dim, d_model), nn.ReLU()) if memory_dim != d_model else None
        self.queries = nn.Parameter(torch.randn(queries, d_model))

        def layer() -> nn.Module:
            if moe:
                return SoftMoEDecoderLayer(d_model, heads, dim_feedforward, experts, slots, dropout)
            return nn.TransformerDecoderLayer(d_model, heads, dim_feedforward, dropout, batch_first=True)

        first = layer()
        self.layers = nn.ModuleList(
            [first] + [layer() if layer_init == "independent" else copy.deepcopy(first) for _ in range(layers - 1)])
        self.classifier = nn.Linear(d_model, vocabulary)

    def forward(self, memory: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """memory (B, L, memory_dim), padding_mask (B, L) True = ignore, or None -> logits (B, M, V)."""
        if self.input is not None:
            memory = self.input(memory)
        x = self.queries.unsqueeze(0).expand(memory.shape[0], -1, -1)
        for layer in self.layers:
            x = layer(x, memory, memory_key_padding_mask=padding_mask)
        return self.classifier(x)


class UMoEDModel(nn.Module):
    """CLIP backbone and ONE `TokenDecoderHash` used for both modalities.

    Image memory: [pooled, patch tokens] (for a ViT: ln_post+proj of CLS and the 49 patches, (B, 50, D)).
    Text memory: all `max_words` positions after ln_final+text_projection (SOT, words, EOT, padding), causal
    mask only; `mask_padding` hides the padding positions from the cross-attention.
    """

    def __init__(self, backbone: CLIPBackbone, head: TokenDecoderHash, mask_padding: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.mask_padding = mask_padding

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        out = self.backbone.encode_image_tokens(images)
        return self.head(torch.cat([out.pooled.unsqueeze(1), out.tokens], dim=1))

    def encode_text(self, texts: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.backbone.encode_text_tokens(texts)
        return self.head(out.tokens, text_mask if self.mask_padding else None)

    def forward(self, images: torch.Tensor, texts: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Symbol logits (B, M, V) of the images and of the texts."""
        return self.encode_image(images), self.encode_text(texts, text_mask)


def symbol_codes(logits: torch.Tensor) -> torch.Tensor:
    """±1 codes (B, M·log2 V) from symbol logits (B, M, V): each position's argmax symbol written as a
    log2 V-digit binary number, most significant digit first, digit 1 -> +1 and 0 -> -1 (ties: lowest symbol)."""
    vocabulary = logits.shape[-1]
    digits = int(math.log2(vocabulary))
    if 2 ** digits != vocabulary:
        raise ValueError(f"the vocabulary size {vocabulary} is not a power of two")
    index = logits.argmax(dim=-1)
    shifts = torch.arange(digits - 1, -1, -1, device=logits.device)
    bits = (index.unsqueeze(-1) >> shifts) & 1
    return (bits * 2 - 1).flatten(1).to(logits.dtype if logits.is_floating_point() else torch.float32)
