"""DMsH-LN: Deep Multi-similarity Hashing via Label-guided Network (Wu et al., Neurocomputing 2024)."""
from __future__ import annotations

from dataclasses import dataclass

from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option

from .loss import DMsHLNLoss


@dataclass
class DMsHLNConfig(BaseConfig):
    # original repository (QinLab-WFU/DMsH-LN) defaults. The unified repository's LabelNet mask
    # (--similarity-source labelnet, epochs 200, batch 300) marks practically every pair positive with an untrained
    # LabelNet, so the MS loss is 0 and nothing trains (README)
    epochs: int = option(100, "training epochs (unified repository: 200)")
    batch_size: int = option(128, "training batch size (unified repository: 300)")
    similarity_source: str = option("labels", "positive pairs: shared labels (labels, original repository) or the "
                                              "sign of untrained-LabelNet code products (labelnet, unified)",
                                    choices=("labels", "labelnet"))

    # hash heads: kaiming (both repositories)
    defaults = {"head_init": "kaiming"}
    # demo (tiny random-init CLIP): kaiming-initialised heads learn much slower there (README)
    dataset_defaults = {"demo": dict(head_init="default")}


class Trainer(HashTrainer):
    Config = DMsHLNConfig
    name = "DMsH-LN"
    paper = "Deep Multi-similarity Hashing via Label-guided Network for Cross-modal Retrieval (Neurocomputing 2024)"

    def build_criterion(self) -> DMsHLNLoss:
        return DMsHLNLoss(self.num_classes, self.cfg.output_dim, self.cfg.similarity_source)

    def on_epoch_start(self, epoch: int) -> None:
        if self.criterion.labelnet is not None:
            self.criterion.labelnet.set_alpha(epoch)

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        return self.criterion(*self.global_batch(image, text, batch["label"]))
