"""DDWSH: Deep Distance Weighted Sampling Hashing for Cross-modal Retrieval (Cheng et al., IEEE TMM 2026)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from train.base import HashTrainer
from train.config import BaseConfig
from train.distance_weighted import LOWER_CUTOFF, MINER_INPUTS
from utils.config import option

from .loss import MarginLoss
from .miner import POSITIVE_SAMPLING


@dataclass
class DDWSHConfig(BaseConfig):
    # original repository (QinLab-WFU/DDWSH argsbase.py / get_args.py) defaults
    epochs: int = option(100, "training epochs")
    batch_size: int = option(128, "training batch size")
    margin: float = option(0.2, "margin m around the class boundaries β")
    beta: float = option(1.2, "initial value of every class boundary β")
    beta_lr: float | None = option(None, "BertAdam learning rate of the class betas (default: --lr, the reference)")
    beta_weight_decay: float | None = option(None, "decoupled weight decay of the class betas "
                                                   "(default: --weight-decay, the reference)")
    ddwsh_miner_input: str = option("distance_matrix", "what the negative sampler measures: distance_matrix (the "
                                                      "reference: rows of the B×B distance matrix, dim = B) or "
                                                      "embeddings (Roth's sampler: code distances, dim = K)",
                                    choices=MINER_INPUTS)
    ddwsh_positives: str = option("one", "triplets per anchor: one (the reference: one random positive) or all (Wu et "
                                         "al.: every positive, each with its own sampled negative)",
                                  choices=POSITIVE_SAMPLING)
    ddwsh_lower_cutoff: float = option(LOWER_CUTOFF, "lower clamp of the distances the sampling weights use "
                                                     "(reference 0.5; larger = draws spread over more negatives)")

    # hash heads: kaiming (uniform fan_out, zero bias; the reference LinearHash)
    defaults = {"head_init": "kaiming"}
    # demo (tiny from-scratch CLIP): the image tower hardly learns with one near-hardest negative per anchor; Roth's
    # sampler on the code distances, every positive (Wu et al.) and the cutoff at β + m = 1.4 (uniform over the
    # margin-violating negatives) train it; PyTorch's head init avoids tanh saturation (README: Demo)
    dataset_defaults = {"demo": dict(head_init="default", ddwsh_miner_input="embeddings", ddwsh_positives="all",
                                     ddwsh_lower_cutoff=1.4, epochs=25)}


class Trainer(HashTrainer):
    Config = DDWSHConfig
    name = "DDWSH"
    paper = "Deep Distance Weighted Sampling Hashing for Cross-modal Retrieval (IEEE TMM 2026)"

    def build_criterion(self) -> MarginLoss:
        cfg = self.cfg
        return MarginLoss(self.num_classes, cfg.beta, cfg.margin, cfg.ddwsh_miner_input, cfg.ddwsh_positives,
                          cfg.ddwsh_lower_cutoff)

    def param_groups(self) -> list[dict[str, Any]]:
        cfg = self.cfg
        beta = {"params": list(self.criterion.parameters()), "lr": cfg.lr if cfg.beta_lr is None else cfg.beta_lr}
        if cfg.beta_weight_decay is not None:
            beta["weight_decay"] = cfg.beta_weight_decay
        return [*super().param_groups(), beta]

    def training_step(self, batch):
        image, text, labels = self.global_batch(*self.model(batch["image"], batch["text"]), batch["label"])
        generator = self.step_generator()  # the same sampled negatives on every process
        image_term = self.criterion(image, labels, generator=generator)
        text_term = self.criterion(text, labels, generator=generator)
        cross_term = self.criterion(image, labels, text, generator=generator)
        return {"loss": image_term + text_term + cross_term, "image": image_term, "text": text_term,
                "cross": cross_term, "beta": self.criterion.beta.detach().mean()}
