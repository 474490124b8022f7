"""DPSaH: Deep Potential Semantic-aware Hashing (Wu et al., EAAI 2026)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option, require

from .loss import BALANCE_ON, CLASSIFIER_INPUTS, DPSaHLoss


@dataclass
class DPSaHConfig(BaseConfig):
    # original repository (QinLab-WFU/DPSaH utils/get_args.py, train/hash_train.py) values
    margin: float = option(0.3, "margin of the quadruplet losses (on −cosine distances)")
    flip_ratio: float = option(0.3, "fraction of each code's bits replaced by random ±1 before the classifier "
                                    "(the reference hard-codes 0.3; its unused --vartheta is 0.5)")
    classifier_weight: float = option(0.1, "weight of the two bit-noise classification cross-entropies")
    balance_weight: float = option(0.3, "weight of the bit-balance term")
    classifier_input: str = option("own", "what the text classification term reads: own (the noised text codes) "
                                          "or image (the reference: a second noise draw of the image codes)",
                                   choices=CLASSIFIER_INPUTS)
    balance_on: str = option("codes", "bit balance on the image and text codes, or on the label matrix (the "
                                      "reference: a constant without gradient)", choices=BALANCE_ON)
    train_classifier: bool = option(True, "train the classifier with the heads (BertAdam at --lr); "
                                          "--no-train-classifier keeps it at its random initialisation (the "
                                          "reference, whose optimizer misses it)")

    # hash heads: kaiming (uniform fan_out, zero bias; the reference LinearHash); 128 bits, the only length the
    # reference runs
    defaults = {"epochs": 100, "batch_size": 128, "output_dim": 128, "head_init": "kaiming"}
    dataset_defaults = {"demo": dict(head_init="default")}

    def validate(self) -> None:
        super().validate()
        require(0 <= self.flip_ratio < 1, "flip_ratio", self.flip_ratio, "must lie in [0, 1)")
        require(self.margin >= 0, "margin", self.margin, "must not be negative")


class Trainer(HashTrainer):
    Config = DPSaHConfig
    name = "DPSaH"
    paper = "Deep Potential Semantic-aware Hashing for Cross-modal Retrieval (EAAI 2026)"

    def build_criterion(self) -> DPSaHLoss:
        cfg = self.cfg
        criterion = DPSaHLoss(cfg.output_dim, self.num_classes, cfg.margin, cfg.flip_ratio, cfg.classifier_weight,
                              cfg.balance_weight, cfg.classifier_input, cfg.balance_on)
        criterion.classifier.requires_grad_(cfg.train_classifier)
        return criterion

    def param_groups(self) -> list[dict[str, Any]]:
        """The default groups, and the classifier at `lr` as the heads unless it is frozen."""
        groups = super().param_groups()
        if self.cfg.train_classifier:
            groups.append({"params": list(self.criterion.parameters()), "lr": self.cfg.lr})
        return groups

    def training_step(self, batch):
        """Quadruplet, bit-noise classification and balance terms on the global batch; the bit noise comes from
        the step's generator, so every process flips the same bits."""
        image, text = self.model(batch["image"], batch["text"])
        image, text, labels = self.global_batch(image, text, batch["label"])
        return self.criterion(image, text, labels, generator=self.step_generator())
