"""DNPH's network: CLIP, one hash head and one label classifier (`Pre_Layer`) per modality."""
from __future__ import annotations

import torch
from torch import nn

from model.clip import CLIPBackbone
from model.heads import DualHashModel


class DNPHModel(DualHashModel):
    """`forward` returns the codes (image, text); `codes_and_logits` also the classifier logits.

    The classifiers are Linear(D, C) on the pooled CLIP features (not on the codes), PyTorch default init.
    """

    def __init__(self, backbone: CLIPBackbone, image_head: nn.Module, text_head: nn.Module, num_classes: int):
        super().__init__(backbone, image_head, text_head)
        self.image_classifier = nn.Linear(backbone.embed_dim, num_classes)
        self.text_classifier = nn.Linear(backbone.embed_dim, num_classes)

    def codes_and_logits(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(image codes, text codes, image logits, text logits), each modality's features computed once."""
        image = self.backbone.encode_image(images)
        text = self.backbone.encode_text(texts)
        return (self.image_head(image), self.text_head(text), self.image_classifier(image),
                self.text_classifier(text))
