"""DIMCH's set encoder over CLIP token sequences (README.md, section Model). Layouts are batch-first throughout."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.clip import CLIPBackbone


class TokenSetHash(nn.Module):
    """Tokens (B, T, D) -> set elements e (B, M, K) and hash h = tanh(mean_m e) (B, K).

    `Conv1d(T, M, 3, padding=1)` treats the T tokens as channels and the D features as the sequence axis, so it
    runs on the batch-first token tensor as it is; then ReLU and a per-element MLP
    `Linear(D, D/2) -> ReLU -> Dropout -> Linear(D/2, K)`. Init: conv kaiming_normal(fan_in), linears
    kaiming_uniform(fan_out), zero biases.
    """

    def __init__(self, num_tokens: int, dim: int, bits: int, set_size: int = 8, dropout: float = 0.3):
        super().__init__()
        self.num_tokens = num_tokens
        self.conv = nn.Conv1d(num_tokens, set_size, kernel_size=3, padding=1)
        self.mlp = nn.Sequential(nn.Linear(dim, dim // 2), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim // 2, bits))
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in")
        nn.init.zeros_(self.conv.bias)
        for layer in (self.mlp[0], self.mlp[3]):
            nn.init.kaiming_uniform_(layer.weight, mode="fan_out")
            nn.init.zeros_(layer.bias)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tokens.dim() != 3 or tokens.shape[1] != self.num_tokens:
            raise ValueError(f"expected tokens (B, {self.num_tokens}, D), got {tuple(tokens.shape)}")
        elements = self.mlp(torch.relu(self.conv(tokens)))
        return elements, torch.tanh(elements.mean(dim=1))


@dataclass
class SetOutput:
    """Set elements (B, M, K) and hash outputs (B, K) of both modalities."""

    image_elements: torch.Tensor
    image_hash: torch.Tensor
    text_elements: torch.Tensor
    text_hash: torch.Tensor


def image_token_count(backbone: CLIPBackbone) -> int:
    """Length of DIMCH's image sequence: the pooled token followed by the grid tokens (ViT-B/32: CLS + 49 = 50)."""
    visual = backbone.clip.visual
    table = visual.positional_embedding if backbone.is_vit else visual.attnpool.positional_embedding
    return int(table.shape[0])


class DIMCHModel(nn.Module):
    """CLIP token outputs and one TokenSetHash per modality (no sharing).

    Image sequence: the pooled embedding (ln_post(CLS) @ proj) then the projected patch tokens. Text sequence:
    all `max_words` positions (SOT, words, EOT and padding) after ln_final @ text_projection, causal mask only;
    `zero_text_padding` zeroes the padding positions before the set encoder (the reference keeps them).
    """

    def __init__(self, backbone: CLIPBackbone, bits: int, set_size: int = 8, dropout: float = 0.3,
                 zero_text_padding: bool = False):
        super().__init__()
        self.backbone = backbone
        dim = backbone.embed_dim
        self.zero_text_padding = zero_text_padding
        self.image_hash = TokenSetHash(image_token_count(backbone), dim, bits, set_size, dropout)
        self.text_hash = TokenSetHash(backbone.max_words, dim, bits, set_size, dropout)

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        out = self.backbone.encode_image_tokens(images)
        return torch.cat([out.pooled[:, None, :], out.tokens], dim=1)

    def text_tokens(self, texts: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.encode_text_tokens(texts).tokens
        return tokens.masked_fill(text_mask[..., None], 0.0) if self.zero_text_padding else tokens

    def forward(self, images: torch.Tensor, texts: torch.Tensor, text_mask: torch.Tensor) -> SetOutput:
        image_elements, image_hash = self.image_hash(self.image_tokens(images))
        text_elements, text_hash = self.text_hash(self.text_tokens(texts, text_mask))
        return SetOutput(image_elements, image_hash, text_elements, text_hash)
