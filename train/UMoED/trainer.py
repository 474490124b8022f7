"""UMoED: A Unified Generative Hashing for Cross-Modal Retrieval (ACM ToMM 2025)."""
from __future__ import annotations

from dataclasses import dataclass

from dataset.transforms import TRAIN_TRANSFORMS
from train.base import HashTrainer
from train.config import BaseConfig
from utils.config import option, require
from utils.errors import UserError

from .loss import umoed_loss
from .model import TokenDecoderHash, UMoEDModel, symbol_codes

BITS_PER_POSITION = (1, 2, 4, 8, 16)


@dataclass
class UMoEDConfig(BaseConfig):
    # kalenforn/clip-based-cross-modal-hash configs/UMoED/config.yaml
    epochs: int = option(100, "training epochs")
    batch_size: int = option(100, "training batch size")
    lr: float = option(1e-4, "learning rate of the shared decoder")
    train_transform: str = option("flip_random_crop", "training image transform", choices=TRAIN_TRANSFORMS)
    set_dim: int | None = option(None, "M, the number of query tokens (code positions); each emits one of "
                                       "2^(bits/M) symbols (default: --output-dim, i.e. 1 bit per position; the "
                                       "shipped config has M = 64 for 64 bits)")
    decoder_layers: int = option(6, "decoder layers")
    decoder_init: str = option("copy", "decoder layer initialisation: copy = every layer starts as a copy of the "
                                       "first (the reference), independent = a random draw per layer",
                               choices=("copy", "independent"))
    decoder_heads: int = option(8, "attention heads of the decoder")
    dim_feedforward: int = option(2048, "feed-forward width of the decoder layers")
    moe: bool = option(True, "Soft-MoE feed-forward (--no-moe: a plain nn.TransformerDecoderLayer)")
    num_experts: int = option(8, "Soft-MoE experts per layer")
    slots_per_expert: int = option(8, "Soft-MoE slots per expert")
    dropout: float = option(0.3, "dropout of the decoder (residual branches, feed-forward, attention weights)")
    hidden_dim: int | None = option(None, "decoder width (default: the backbone's embedding width; another value "
                                          "adds Linear + ReLU on the memory tokens)")
    mask_padding: bool = option(False, "hide text padding positions from the cross-attention (the reference "
                                       "attends to them)")
    extreme: bool = option(True, "compare softmax(ê / extreme_t) distributions instead of the normalised logits")
    extreme_t: float = option(0.3, "temperature of the symbol softmax")
    margin: float = option(0.1, "triplet margin (chamfer.token_triplet_margin)")
    triplet_alpha: float = option(1.0, "weight of the triplet loss")
    unif_alpha: float = option(0.8, "weight of the diversity loss")

    # demo (tiny CLIP from scratch, CPU): a smaller, dropout-free decoder, a weaker diversity term and 40 epochs
    # (0.62 mAP after 25, 0.80 after 40; README "Demo")
    dataset_defaults = {"demo": dict(decoder_layers=2, dim_feedforward=512, dropout=0.0, unif_alpha=0.1, epochs=40)}
    inapplicable = {"head_init": "UMoED has its own hash heads", "head_dropout": "UMoED has its own hash heads"}

    def validate(self) -> None:
        super().validate()
        positions = self.set_dim or self.output_dim
        require(positions >= 1 and self.output_dim % positions == 0
                and self.output_dim // positions in BITS_PER_POSITION, "output_dim", self.output_dim,
                f"must be --set-dim {positions} times one of {BITS_PER_POSITION} bits per position")
        require(self.hidden_dim is None or self.hidden_dim % self.decoder_heads == 0, "hidden_dim", self.hidden_dim,
                f"must be divisible by --decoder-heads {self.decoder_heads}")


class Trainer(HashTrainer):
    Config = UMoEDConfig
    name = "UMoED"
    paper = "A Unified Generative Hashing for Cross-Modal Retrieval (ACM ToMM 2025)"

    def build_model(self) -> UMoEDModel:
        cfg = self.cfg
        positions = cfg.set_dim or cfg.output_dim
        width = cfg.hidden_dim or self.backbone.embed_dim
        if width % cfg.decoder_heads:
            raise UserError(f"the backbone's width {width} is not divisible by --decoder-heads {cfg.decoder_heads}; "
                            "choose another --decoder-heads or set --hidden-dim")
        head = TokenDecoderHash(self.backbone.embed_dim, positions, 2 ** (cfg.output_dim // positions), width,
                                cfg.decoder_layers, cfg.decoder_heads, cfg.dim_feedforward, cfg.num_experts,
                                cfg.slots_per_expert, cfg.dropout, cfg.moe, cfg.decoder_init)
        return UMoEDModel(self.backbone, head, cfg.mask_padding)

    def training_step(self, batch):
        cfg = self.cfg
        image, text = self.model(batch["image"], batch["text"], batch["text_mask"])
        image, text, labels = self.global_batch(image, text, batch["label"])
        return umoed_loss(image, text, labels, cfg.extreme_t if cfg.extreme else None, cfg.margin,
                          cfg.triplet_alpha, cfg.unif_alpha)

    def encode(self, batch):
        image, text = self.model(batch["image"], batch["text"], batch["text_mask"])
        return {self.primary_code_set: (symbol_codes(image), symbol_codes(text))}
