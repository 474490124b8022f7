"""CMCL: Contrastive Multi-bit Collaborative Learning for Deep Cross-modal Hashing (Wu et al., IEEE TKDE 2024)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dataset.catalog import PROTOCOLS
from train.base import HashTrainer
from train.common import float32_region
from train.config import BaseConfig
from train.history import Results
from utils.config import option, require
from utils.metrics import to_binary_codes

from .loss import CMCLLoss
from .model import CMCLHead, CMCLModel, CMCLOutput


@dataclass
class CMCLConfig(BaseConfig):
    # original repository (DarrenZZhang/CMCL) utils/get_args.py; per-dataset values from CMCL_*.sh below
    split: str = option("mith", "split protocol: standard (seed 1814, 5000/10000) or mith (MITH/CMCL sizes, seed 1)",
                        choices=PROTOCOLS)
    epochs: int = option(30, "training epochs")
    batch_size: int = option(128, "training batch size")
    lr: float = option(2e-3, "learning rate of the hashing module")
    clip_lr: float = option(1e-6, "learning rate of the CLIP backbone")
    weight_decay: float = option(0.01, "BertAdam decoupled weight decay (all parameters)")
    warmup_proportion: float = option(0.05, "fraction of the steps with linear learning-rate warmup")
    code_lengths: tuple[int, ...] = option((16, 32, 64), "code lengths learnt together, each evaluated and saved "
                                           "(--output-dim picks the one reported)")
    auxiliary_bits: int = option(128, "length of the auxiliary long code the short codes reconstruct (also evaluated)")
    freeze_clip: bool = option(False, "keep the CLIP backbone fixed")
    concept_num: int = option(64, "learnable concept queries of the local branch")
    transformer_layers: int = option(1, "transformer blocks after each local cross-attention")
    res_mlp_layers: int = option(2, "residual MLP blocks of the global branch")
    dropout: float = option(0.5, "dropout inside the residual MLPs")
    hyper_cls_intra: float = option(0.005, "γ: weight of the intra-modal likelihoods")
    hyper_cls_inter: float = option(5.0, "β: weight of the inter-modal likelihoods")
    hyper_quan: float = option(1.0, "q: weight of the quantization terms")
    hyper_lambda: float = option(1.0, "λ: weight of both contrastive terms")
    hyper_info_nce: float = option(5.0, "α: extra weight of the global contrastive term")
    mu: float = option(20.0, "μ: weight of the auxiliary code's group and of the reconstruction")
    hyper_recon: float = option(0.005, "δ: weight of the reconstruction of the auxiliary code")
    tau_local: float = option(0.07, "temperature of the local (concept-token) InfoNCE")
    tau_global: float = option(0.07, "temperature of the global InfoNCE")

    dataset_defaults = {
        "flickr25k": dict(lr=1e-3, eval_every=3, hyper_recon=0.001),
        "coco": dict(lr=2e-3, eval_every=3, hyper_recon=0.005),
        "nuswide": dict(lr=2e-3, epochs=10, eval_every=2, hyper_recon=0.001),
        "demo": dict(split="standard"),
    }
    inapplicable = {"head_init": "CMCL has its own hash heads", "head_dropout": "CMCL has its own hash heads"}

    def validate(self) -> None:
        super().validate()
        lengths = self.code_lengths
        require(bool(lengths) and min(lengths) >= 1 and len(set(lengths)) == len(lengths), "code_lengths",
                ",".join(map(str, lengths)), "expected distinct positive lengths such as 16,32,64")
        require(self.auxiliary_bits not in lengths, "auxiliary_bits", self.auxiliary_bits,
                f"is also in --code-lengths {','.join(map(str, lengths))}")
        require(self.output_dim in (*lengths, self.auxiliary_bits), "output_dim", self.output_dim,
                f"is not one of the learnt lengths {','.join(map(str, lengths))} (auxiliary {self.auxiliary_bits})")


class Trainer(HashTrainer):
    Config = CMCLConfig
    name = "CMCL"
    paper = "Contrastive Multi-bit Collaborative Learning for Deep Cross-modal Hashing (IEEE TKDE 2024)"

    @property
    def lengths(self) -> tuple[int, ...]:
        return self.cfg.code_lengths

    def build_model(self) -> CMCLModel:
        cfg = self.cfg
        if cfg.freeze_clip:
            self.backbone.requires_grad_(False)
        head = CMCLHead(self.backbone.embed_dim, self.lengths, cfg.auxiliary_bits, cfg.concept_num,
                        cfg.transformer_layers, cfg.res_mlp_layers, cfg.dropout)
        return CMCLModel(self.backbone, head)

    def build_criterion(self) -> CMCLLoss:
        cfg = self.cfg
        return CMCLLoss(self.train_labels, self.lengths, cfg.auxiliary_bits, cfg.hyper_cls_intra, cfg.hyper_cls_inter,
                        cfg.hyper_quan, cfg.hyper_lambda, cfg.hyper_info_nce, cfg.mu, cfg.hyper_recon, cfg.tau_local,
                        cfg.tau_global)

    def training_step(self, batch):
        out = self.global_batch_of(self.model(batch["image"], batch["text"], batch["text_mask"]))
        labels, index = self.global_batch(batch["label"], batch["index"])
        with float32_region(device_type=self.device.type):  # likelihoods and InfoNCE in fp32
            out = float_outputs(out)
            self.criterion.update_banks(index, out)
            return self.criterion(out, labels, index)

    def on_epoch_end(self, epoch: int) -> None:
        self.criterion.refresh_targets()

    def encode(self, batch):
        out = self.model(batch["image"], batch["text"], batch["text_mask"])
        return {str(k): (to_binary_codes(out.codes_image[k]), to_binary_codes(out.codes_text[k]))
                for k in (*self.lengths, self.cfg.auxiliary_bits)}

    def selection_score(self, results: Results) -> float:
        """Mean of I->T and T->I mAP over the short lengths (the auxiliary code is evaluated, not selected on)."""
        maps = [results[str(k)][d]["mAP"] for k in self.lengths for d in ("i2t", "t2i")]
        return sum(maps) / len(maps)


def float_outputs(out: CMCLOutput) -> CMCLOutput:
    """The outputs in fp32 (they may be half precision under autocast)."""
    def floats(codes: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        return {k: v.float() for k, v in codes.items()}

    return CMCLOutput(floats(out.codes_image), floats(out.codes_text), floats(out.recon_image), floats(out.recon_text),
                      out.concepts_image.float(), out.concepts_text.float(), out.global_image.float(),
                      out.global_text.float())
