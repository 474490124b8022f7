"""Template: the smallest complete method (pairwise cosine regression + quantization).

Copy this folder to train/<NAME>/ and run `python main.py --method <NAME>`. Nothing outside the
folder needs to change: the registry finds the package by its folder name and uses `Trainer`.
"""
from __future__ import annotations

from dataclasses import dataclass

from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option, require

from .loss import template_loss


@dataclass
class TemplateConfig(BaseConfig):
    """Every field becomes a flag (`--quantization-weight 0.1`) listed by `--method <NAME> --help`."""

    quantization_weight: float = option(0.1, "weight of the quantization term ||h - sign(h)||²")

    # defaults of inherited options for this method, e.g. {"head_init": "kaiming", "epochs": 100}
    defaults = {}
    # per-dataset values, e.g. {"coco": dict(batch_size=128), "demo": dict(epochs=25)}
    dataset_defaults = {}

    def validate(self) -> None:
        """Checks run when the config is built, before any data is read: one line naming the flag."""
        super().validate()
        require(self.quantization_weight >= 0, "quantization_weight", self.quantization_weight, "must not be negative")


class Trainer(HashTrainer):
    Config = TemplateConfig
    name = "Template"
    paper = "minimal example method of this framework (not a published method)"
    # every term of the loss sees the gathered global batch: exact under torchrun (tests/test_distributed.py)
    distributed = "exact"

    # build_model(): the default CLIP + Linear-Dropout-tanh head per modality is kept here.

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        image, text, labels = self.global_batch(image, text, batch["label"])  # all processes' rows (torchrun)
        return template_loss(image, text, labels, self.cfg.quantization_weight)

    # encode(): the default sign of the head outputs is kept here.
