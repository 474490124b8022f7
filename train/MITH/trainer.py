"""MITH: Multi-Granularity Interactive Transformer Hashing (Liu et al., ACM MM 2023)."""
from __future__ import annotations

from dataclasses import dataclass, fields

from dataset.catalog import PROTOCOLS
from train.base import HashTrainer
from train.common import float32_region
from train.config import BaseConfig
from utils.config import option
from utils.metrics import to_binary_codes

from .loss import MITHLoss
from .model import MITHHead, MITHModel, MITHOutput


@dataclass
class MITHConfig(BaseConfig):
    # original repository (DarrenZZhang/MM23-MITH) utils/get_args.py and run_MITH.sh
    split: str = option("mith", "split protocol: standard (seed 1814, 5000/10000) or mith (MITH/CMCL sizes, seed 1)",
                        choices=PROTOCOLS)
    epochs: int = option(30, "training epochs")
    batch_size: int = option(128, "training batch size")
    lr: float = option(1e-3, "learning rate of the hashing modules")
    clip_lr: float = option(2e-6, "learning rate of the CLIP backbone")
    weight_decay: float = option(0.01, "BertAdam decoupled weight decay (all parameters)")
    warmup_proportion: float = option(0.05, "fraction of the steps with linear learning-rate warmup")
    top_k_label: int = option(8, "concepts each token is routed to in the localized token aggregation")
    transformer_layers: int = option(2, "transformer blocks of the local concept transforming module")
    res_mlp_layers: int = option(2, "residual MLP blocks of the global concept learning module")
    dropout: float = option(0.0, "dropout inside the residual MLPs")
    hyper_tokens_intra: float = option(1.0, "weight of the intra-modal token-hash likelihood")
    hyper_cls_inter: float = option(10.0, "β: weight of the inter-modal CLS-hash likelihood")
    hyper_quan: float = option(8.0, "γ: weight of the quantization loss")
    hyper_info_nce: float = option(50.0, "δ: weight of the contrastive alignment loss")
    hyper_alpha: float = option(0.01, "α: weight of the concept-level InfoNCE inside the contrastive loss")
    hyper_distill: float = option(1.0, "μ: weight of the global-to-local distillation loss")
    hyper_lambda: float = option(0.99, "λ: weight of the global hashes in the binary quantization target")
    temperature: float = option(0.07, "τ of both InfoNCE terms (fixed)")

    # demo only (README): the demo keeps its own split; from scratch, the reference weights let the in-batch
    # InfoNCE (δ = 50) drive the backbone (0.46 mAP); the inter-modal likelihood must lead (CMCL's ratios)
    inapplicable = {"head_init": "MITH has its own hash heads", "head_dropout": "MITH has its own hash heads"}
    dataset_defaults = {"demo": dict(split="standard", hyper_cls_inter=100.0, hyper_info_nce=5.0, hyper_quan=1.0)}


class Trainer(HashTrainer):
    Config = MITHConfig
    name = "MITH"
    paper = "Multi-Granularity Interactive Transformer Hashing for Cross-modal Retrieval (ACM MM 2023)"

    def build_model(self) -> MITHModel:
        cfg = self.cfg
        head = MITHHead(self.backbone.embed_dim, cfg.output_dim, cfg.top_k_label, cfg.transformer_layers,
                        cfg.res_mlp_layers, cfg.dropout)
        return MITHModel(self.backbone, head)

    def build_criterion(self) -> MITHLoss:
        cfg = self.cfg
        return MITHLoss(self.train_labels, cfg.output_dim, cfg.hyper_tokens_intra, cfg.hyper_cls_inter, cfg.hyper_quan,
                        cfg.hyper_info_nce, cfg.hyper_alpha, cfg.hyper_distill, cfg.hyper_lambda, cfg.temperature)

    def training_step(self, batch):
        out = self.global_batch_of(self.model(batch["image"], batch["text"], batch["text_mask"]))
        labels, index = self.global_batch(batch["label"], batch["index"])
        with float32_region(*(getattr(out, f.name) for f in fields(out))) as parts:  # likelihoods, InfoNCE in fp32
            out = MITHOutput(*parts)
            self.criterion.update_banks(index, out)
            return self.criterion(out, labels)

    def encode(self, batch):
        out = self.model(batch["image"], batch["text"], batch["text_mask"])
        return {self.primary_code_set: (to_binary_codes(out.cls_image + out.tok_image),
                                        to_binary_codes(out.cls_text + out.tok_text))}
