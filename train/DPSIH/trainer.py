"""DPSIH: Polysemic Semantic Instance Network for Cross-Modal Hashing (AAAI 2026)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option
from utils.metrics import to_binary_codes

from .codes import MultiCodeDistance
from .loss import dpsih_loss
from .model import DPSIHModel


@dataclass
class DPSIHConfig(BaseConfig):
    # QinLab-WFU/DPSIH train/argsbase.py and train/DPSIH/get_args.py
    epochs: int = option(100, "training epochs")
    batch_size: int = option(128, "training batch size")
    output_dim: int = option(32, "hash code length in bits (each of the n codes of an item)", aliases=("--bits",))
    num_embeds: int = option(4, "n, embeddings (codes) per item")
    margin: float = option(0.25, "margin of the multi-semantic correlation triplet loss")
    alpha1: float = option(0.01, "weight of the distribution consistency (MMD-like) term")
    alpha2: float = option(0.01, "weight of the embedding diversity term")
    gamma: float = option(0.5, "γ of the Laplacian kernel exp(−γ‖u − v‖) of the consistency term")
    msc_weight: float = option(100.0, "weight of the triplet loss (hard-coded 100 in the reference)")
    reduction: str = option("sum", "reduction of the consistency and diversity terms: sum (the reference "
                                   "trainer's, weights tuned with it) or mean", choices=("sum", "mean"))
    dropout: float = option(0.0, "dropout of the DSIE residuals")
    grad_clip: float = option(2.0, "global gradient-norm clip over the model before each step (<= 0: off)")
    double_ln_post: bool = option(True, "apply ln_post a second time to the ViT patch tokens (the reference)")
    resnet_token_norm: bool = option(True, "layer-normalise the image tokens of a ResNet backbone (e.g. the tiny "
                                           "demo one), which has no ln_post; no effect on a ViT")
    mask_padding: bool = option(False, "keep text padding positions out of the attention pooling (the reference "
                                       "pools over them)")

    # hash heads: kaiming (kaiming_uniform fan_out, zero bias: the reference)
    defaults = {"head_init": "kaiming"}
    # demo (tiny CLIP from scratch): with the kaiming head init the tanh of the image head saturates to an almost
    # constant code within a few epochs; the image side learns slowly, hence more epochs (README "Demo")
    dataset_defaults = {"demo": dict(head_init="default", epochs=25)}


class Trainer(HashTrainer):
    Config = DPSIHConfig
    name = "DPSIH"
    paper = "Polysemic Semantic Instance Network for Cross-Modal Hashing (AAAI 2026)"

    def build_model(self) -> DPSIHModel:
        cfg = self.cfg
        return DPSIHModel(self.backbone, cfg.output_dim, cfg.num_embeds, cfg.head_dropout, cfg.dropout,
                          cfg.double_ln_post, cfg.mask_padding, cfg.head_init,
                          cfg.resnet_token_norm)

    def training_step(self, batch):
        cfg = self.cfg
        (image, _, image_residual), (text, _, text_residual) = self.model(batch["image"], batch["text"],
                                                                          batch["text_mask"])
        image, text, image_residual, text_residual, labels = self.global_batch(image, text, image_residual,
                                                                               text_residual, batch["label"])
        return dpsih_loss(image, text, image_residual, text_residual, labels, cfg.margin, cfg.alpha1,
                          cfg.alpha2, cfg.gamma, cfg.msc_weight, cfg.reduction)

    def on_before_optimizer_step(self) -> None:
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)

    def encode(self, batch):
        """n codes per item, flattened to one ±1 row of n·K bits (embedding k in bits k·K .. (k+1)·K − 1)."""
        (image, _, _), (text, _, _) = self.model(batch["image"], batch["text"], batch["text_mask"])
        return {self.primary_code_set: (to_binary_codes(image).flatten(1), to_binary_codes(text).flatten(1))}

    def distance(self) -> MultiCodeDistance:
        return MultiCodeDistance(self.cfg.num_embeds, self.cfg.output_dim)
