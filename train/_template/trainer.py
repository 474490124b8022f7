"""Template: the smallest complete method (pairwise cosine regression + quantization).

Copy this folder to train/<NAME>/ and run `python main.py --method <NAME>`. Nothing outside the
folder needs to change: the registry finds the package by its folder name and uses `Trainer`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from train.base import HashTrainer
from train.common import label_similarity
from train.config import BaseConfig
from utils.config import option


@dataclass
class TemplateConfig(BaseConfig):
    """Every field becomes a flag (`--quantization-weight 0.1`) listed by `--method <NAME> --help`."""

    quantization_weight: float = option(0.1, "weight of the quantization term ||h - sign(h)||²")

    # per-dataset defaults override the field defaults, e.g. {"coco": dict(batch_size=128)}
    dataset_defaults = {}


def pairwise_cosine_loss(a: torch.Tensor, b: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the cosine of each (a_i, b_j) and 2·S_ij − 1 (±1 targets)."""
    cosine = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    return (cosine - (2 * similarity - 1)).square().mean()


class Trainer(HashTrainer):
    Config = TemplateConfig
    name = "Template"
    paper = "minimal example method of this framework (not a published method)"

    # build_model(): the default CLIP + Linear-Dropout-tanh head per modality is kept here.

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        labels = batch["label"]
        similarity = label_similarity(labels).float()
        pairwise = (pairwise_cosine_loss(image, text, similarity) + pairwise_cosine_loss(image, image, similarity)
                    + pairwise_cosine_loss(text, text, similarity))
        quantization = (image - image.sign()).square().mean() + (text - text.sign()).square().mean()
        loss = pairwise + self.cfg.quantization_weight * quantization
        return {"loss": loss, "pairwise": pairwise, "quantization": quantization}

    # encode(): the default sign of the head outputs is kept here.
