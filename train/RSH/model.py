"""RSH's model (Double Feature Representation): CLIP, a tanh hash head and a linear uncertainty head per modality.

The uncertainty heads read the same pooled CLIP features as the hash heads; they only enter the training
similarity and play no part in the binary codes (`encode_image` / `encode_text` give the hash outputs).
"""
from __future__ import annotations

import torch
from torch import nn

from model.clip import CLIPBackbone
from model.heads import DualHashModel, LinearTanhHead


class RSHModel(DualHashModel):
    """`forward(images, texts)` -> (image code, image uncertainty, text code, text uncertainty), each (B, K)."""

    def __init__(self, backbone: CLIPBackbone, bits: int, dropout: float = 0.2, head_init: str = "default"):
        dim = backbone.embed_dim
        super().__init__(backbone, LinearTanhHead(dim, bits, dropout, init=head_init),
                         LinearTanhHead(dim, bits, dropout, init=head_init))
        self.image_uncertainty = nn.Linear(dim, bits)  # PyTorch's default init, no activation (reference)
        self.text_uncertainty = nn.Linear(dim, bits)

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        image_features = self.backbone.encode_image(images)
        text_features = self.backbone.encode_text(texts)
        return (self.image_head(image_features), self.image_uncertainty(image_features),
                self.text_head(text_features), self.text_uncertainty(text_features))
