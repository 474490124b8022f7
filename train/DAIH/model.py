"""DAIH's network: one CLIP encoder, two L2-normalised linear embeddings per modality (class and auxiliary)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DAIHModel(nn.Module):
    """CLIP with `cls` and `aux` heads `Linear(D, K)` per modality (PyTorch's init), outputs L2-normalised.

    `forward(images, texts)` gives the class embeddings (image, text), whose signs are the hash codes;
    `embed_image` / `embed_text` give (class, auxiliary) embeddings of one modality.
    """

    def __init__(self, backbone: nn.Module, bits: int):
        super().__init__()
        dim = backbone.embed_dim
        self.backbone = backbone
        self.image_cls, self.image_aux = nn.Linear(dim, bits), nn.Linear(dim, bits)
        self.text_cls, self.text_aux = nn.Linear(dim, bits), nn.Linear(dim, bits)

    def head_parameters(self) -> list[nn.Parameter]:
        """The four heads' parameters (everything but the backbone)."""
        return [p for head in (self.image_cls, self.image_aux, self.text_cls, self.text_aux) for p in head.parameters()]

    def embed_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone.encode_image(images)
        return F.normalize(self.image_cls(features), dim=-1), F.normalize(self.image_aux(features), dim=-1)

    def embed_text(self, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone.encode_text(texts)
        return F.normalize(self.text_cls(features), dim=-1), F.normalize(self.text_aux(features), dim=-1)

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_image(images)[0], self.embed_text(texts)[0]
