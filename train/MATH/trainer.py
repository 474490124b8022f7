"""MATH: Multi-label Augmentation Transformer Hashing (sunnyttr/MATH; venue not confirmed)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dataset.catalog import PROTOCOLS
from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option
from utils.errors import UserError
from utils.metrics import to_binary_codes
from utils.text import CaptionTokenizer, padding_mask

from .label_text import label_sentences
from .loss import MATHLoss
from .model import MATHHead, MATHModel


@dataclass
class MATHConfig(BaseConfig):
    # original repository (sunnyttr/MATH) utils/get_args.py and run_MATH.sh, the same for every dataset
    split: str = option("mith", "split protocol: standard (seed 1814, 5000/10000) or mith (MITH/CMCL sizes, seed 1)",
                        choices=PROTOCOLS)
    transformer_layers: int = option(2, "transformer blocks of each token hashing module")
    res_mlp_layers: int = option(2, "residual MLP blocks of the shared global concept module")
    dropout: float = option(0.0, "dropout inside the residual MLPs")
    hyper_intra: float = option(4.0, "α: weight of the intra-modal likelihoods (image, text, label)")
    hyper_inter: float = option(13.0, "β: weight of the inter-modal likelihoods (the 6 ordered modality pairs)")
    hyper_mse: float = option(5.0, "δ: weight of the global-to-token MSE (only the token hashes learn from it)")
    hyper_quan: float = option(7.0, "γ: weight of the quantization to sign(cls_i + cls_t + cls_l)")
    hyper_contrast: float = option(57.0, "λ: weight of the contrastive alignment of image, text and label")
    temperature: float = option(0.07, "τ of the InfoNCE terms (fixed)")

    defaults = {"epochs": 30, "batch_size": 128, "clip_lr": 2e-6, "weight_decay": 0.01, "warmup_proportion": 0.05}
    inapplicable = {"head_init": "MATH has its own hash heads", "head_dropout": "MATH has its own hash heads"}
    # demo only (README): the demo keeps the base demo split
    dataset_defaults = {"demo": dict(split="standard")}


class Trainer(HashTrainer):
    Config = MATHConfig
    name = "MATH"
    paper = "Multi-label Augmentation Transformer Hashing for Cross-modal Retrieval (venue not confirmed)"

    def build_model(self) -> MATHModel:
        """MATHModel; also tokenises the training items' label sentences once (`label_texts`, `label_padding`)."""
        cfg = self.cfg
        self.label_texts, self.label_padding = self.tokenised_label_sentences()
        head = MATHHead(self.backbone.embed_dim, cfg.output_dim, cfg.transformer_layers, cfg.res_mlp_layers,
                        cfg.dropout)
        return MATHModel(self.backbone, head)

    def tokenised_label_sentences(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Token ids (N_train, max_words) of every training item's label sentence and their padding mask, on the
        training device (None with --test: encoding reads no labels)."""
        if self.cfg.test:
            return None, None
        names = self.facts.class_names
        if names is None:
            raise UserError("MATH trains on label sentences built from the dataset's class names, and this dataset "
                            "has none; put a classes.txt (one name per label column, in column order) beside the "
                            "label file")
        ids = CaptionTokenizer(self.cfg.max_words)(label_sentences(names, self.train_labels.cpu()))
        return ids.to(self.device), padding_mask(ids).to(self.device)

    def build_criterion(self) -> MATHLoss:
        cfg = self.cfg
        return MATHLoss(self.train_labels, cfg.output_dim, cfg.hyper_intra, cfg.hyper_inter, cfg.hyper_mse,
                        cfg.hyper_quan, cfg.hyper_contrast, cfg.temperature)

    def training_step(self, batch):
        """Forward of image, caption and label sentence (the label attention reads the global batch), the global
        batch's outputs gathered, the three banks updated with them, then the loss."""
        index = batch["index"]
        out = self.global_batch_of(self.model(batch["image"], batch["text"], batch["text_mask"],
                                              self.label_texts[index], self.label_padding[index],
                                              gather=self.dist.gather_rows))
        labels, index = self.global_batch(batch["label"], index)
        self.criterion.update_banks(index, out)
        return self.criterion(out, labels)

    def encode(self, batch):
        """Codes sign(cls + tok) of image and text; the label branch is not used at test time."""
        cls_image, tok_image, cls_text, tok_text = self.model.hashes(batch["image"], batch["text"],
                                                                     batch["text_mask"])
        return {self.primary_code_set: (to_binary_codes(cls_image + tok_image), to_binary_codes(cls_text + tok_text))}
