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
    ms_threshold: float = option(0.1, "similarity threshold λ of the multi-similarity loss (reference 0.1; the "
                                      "MS paper's code and DMsH-LN use 0.5)")
    # hash heads: kaiming (uniform fan_out, zero bias; the reference)
    defaults = {"head_init": "kaiming"}

    # the from-scratch demo model learns only without the uncertainty term and with MS's usual threshold (README)
    dataset_defaults = {"demo": dict(head_init="default", ms_threshold=0.5, mls_weight=0.0, epochs=25)}


class Trainer(HashTrainer):
    Config = DUaPHConfig
    name = "DUaPH"
    paper = "Deep Uncertainty-aware Probabilistic Hashing for Cross-modal Retrieval (ACM TOMM 2026)"

    def build_model(self) -> DUaPHModel:
        return DUaPHModel(self.backbone, self.cfg.output_dim, self.cfg.head_dropout, self.cfg.head_init)

    def param_groups(self) -> list[dict[str, Any]]:
        """One group per part, as the reference: the backbone at clip_lr, heads and uncertainty modules at lr."""
        m, lr = self.model, self.cfg.lr
        return [{"params": list(m.backbone.parameters()), "lr": self.cfg.clip_lr},
                *({"params": list(part.parameters()), "lr": lr}
                  for part in (m.image_head, m.text_head, m.uncertainty_image, m.uncertainty_text))]

    def training_step(self, batch):
        image, text = self.model(batch["image"], batch["text"])
        # the uncertainty modules run on this process's rows (their BatchNorm is synchronised under torchrun);
        # every loss term then sees the global batch
        with_uncertainty = self.dist.global_count(image.shape[0]) >= 2  # batch norm cannot standardise one sample
        uncertainty = (*self.model.uncertainty_image(image), *self.model.uncertainty_text(text)) \
            if with_uncertainty else ()
        image, text, labels, *uncertainty = self.global_batch(image, text, batch["label"], *uncertainty)
        lam = self.cfg.ms_threshold
        ms = sum(multi_similarity_loss(a, b, labels, lam=lam)
                 for a, b in ((image, image), (text, text), (image, text), (text, image)))
        unc = uncertainty_loss(*uncertainty, self.cfg.mls_mode) if with_uncertainty else ms.new_zeros(())
        loss = ms + self.cfg.mls_weight * unc if self.cfg.mls_weight else ms  # weight 0: no 0·inf
        return {"loss": loss, "ms": ms, "uncertainty": unc.detach()}
