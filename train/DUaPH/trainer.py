"""DUaPH: Deep Uncertainty-aware Probabilistic Hashing for Cross-modal Retrieval (Han et al., ACM TOMM 2026)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option

from .loss import MLS_MODES, multi_similarity_loss, uncertainty_loss
from .model import DUaPHModel


@dataclass
class DUaPHConfig(BaseConfig):
    # reference repository (QinLab-WFU/DUaPH train/argsbase.py) defaults; the seed (1814) is the protocol's
    epochs: int = option(100, "training epochs")
    batch_size: int = option(128, "training batch size")
    output_dim: int = option(32, "hash code length in bits", aliases=("--bits",))
    mls_mode: str = option("reference", "uncertainty term: reference (the code's 4th-power, broadcast form) or pfe "
                                        "(PFE mutual-likelihood score of each image-text pair)", choices=MLS_MODES)
    mls_weight: float = option(1.0, "weight of the uncertainty term (reference: 1)")
    head_dropout: float = option(0.2, "dropout before tanh in the hash heads")


class Trainer(HashTrainer):
    Config = DUaPHConfig
    name = "DUaPH"
    paper = "Deep Uncertainty-aware Probabilistic Hashing for Cross-modal Retrieval (ACM TOMM 2026)"

    def build_model(self) -> DUaPHModel:
        return DUaPHModel(self.backbone, self.cfg.output_dim, self.cfg.head_dropout)

    def param_groups(self) -> list[dict[str, Any]]:
        """One group per part, as the reference: the backbone at clip_lr, heads and uncertainty modules at lr."""
        m, lr = self.model, self.cfg.lr
        return [{"params": list(m.backbone.parameters()), "lr": self.cfg.clip_lr},
                *({"params": list(part.parameters()), "lr": lr}
                  for part in (m.image_head, m.text_head, m.uncertainty_image, m.uncertainty_text))]

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        labels = batch["label"]
        ms = (multi_similarity_loss(image, image, labels) + multi_similarity_loss(text, text, labels)
              + multi_similarity_loss(image, text, labels) + multi_similarity_loss(text, image, labels))
        if image.shape[0] < 2:  # batch norm cannot standardise one sample (the reference would crash)
            unc = ms.new_zeros(())
        else:
            mu_i, var_i = self.model.uncertainty_image(image)
            mu_t, var_t = self.model.uncertainty_text(text)
            unc = uncertainty_loss(mu_i, var_i, mu_t, var_t, self.cfg.mls_mode)
        return {"loss": ms + self.cfg.mls_weight * unc, "ms": ms, "uncertainty": unc}
