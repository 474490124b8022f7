"""Options common to every method. A method's Config subclasses `BaseConfig` and adds its own."""
from __future__ import annotations

from dataclasses import dataclass

from dataset.catalog import PROTOCOLS
from dataset.label_noise import NOISE_MODES
from dataset.pairs import CAPTION_CHOICES
from dataset.transforms import TRAIN_TRANSFORMS
from model.clip import BACKBONES
from utils.config import ConfigBase, option, require

# The demo trains a randomly initialised tiny backbone from scratch, so it needs backbone learning
# rates and a warmup of a from-scratch model rather than the fine-tuning values of the papers.
# BertAdam has no bias correction, so its early steps are up to 1.5x larger than Adam's: a 20 %
# warmup was needed (measured: 6 epochs, warmup 0.05 -> 0.46 mAP, 0.2 -> 0.55; docs/demo.md).
DEMO_DEFAULTS = dict(backbone="tiny", epochs=15, batch_size=32, lr=1e-3, clip_lr=1e-3, weight_decay=0.02,
                     warmup_proportion=0.2, eval_every=5, num_workers=0, train_transform="flip",
                     eval_batch_size=250)


@dataclass
class BaseConfig(ConfigBase):
    # --- data
    dataset: str = option("demo", "dataset: coco, flickr25k (alias flickr, mirflickr), nuswide or demo")
    data_dir: str | None = option(None, "folder with index.mat, caption.mat|txt, label.mat (default dataset/<name>)")
    data_root: str | None = option(None, "rewrite absolute image paths: a folder replacing their common prefix, "
                                         "or OLD=NEW")
    index_file: str | None = option(None, "explicit index .mat (default <data-dir>/index.mat)")
    caption_file: str | None = option(None, "explicit caption .mat or .txt")
    label_file: str | None = option(None, "explicit label .mat")
    split: str = option("standard", "split protocol: standard (seed 1814, 5000/10000) or mith (MITH/CMCL sizes, "
                                    "seed 1)", choices=PROTOCOLS)
    query_num: int | None = option(None, "query set size (default: the protocol's)")
    train_num: int | None = option(None, "training set size, taken inside the database (default: the protocol's)")
    seed: int | None = option(None, "split seed (default: the protocol's); also the training seed unless "
                                    "--train-seed is given")
    train_seed: int | None = option(None, "seed of the training randomness: model initialisation, dropout, "
                                          "augmentation, batch order (default: --seed); the split stays fixed")
    numclass: int | None = option(None, "number of classes; read from the label file, checked if given")
    max_words: int = option(32, "text length in tokens (SOT + BPE + EOT, zero padded)")
    train_transform: str = option("resize_crop", "training image transform", choices=TRAIN_TRANSFORMS)
    eval_caption: str = option("first", "caption used for query/database items with several captions",
                               choices=CAPTION_CHOICES)
    num_workers: int | None = option(None, "data loader worker processes (default: min(8, CPU cores))")
    prefetch_factor: int = option(4, "batches each loader worker prepares ahead")
    image_cache: bool = option(False, "keep decoded, resized images in a uint8 memory-mapped file (built on first "
                                      "use, reused by later runs; docs/performance.md)")
    cache_dir: str | None = option(None, "folder of the image cache (default <data-dir>/cache)")
    label_noise: float = option(0.0, "fraction of the training items whose labels are corrupted, each losing one "
                                     "class and gaining an absent one (RSH's noise model, docs/label-noise.md); "
                                     "query and database labels stay clean")
    label_noise_mode: str = option("fixed", "fixed: the noisy labels are drawn once, for the whole run; batch: "
                                            "drawn afresh for every batch (RSH's training loop)", choices=NOISE_MODES)
    label_noise_seed: int | None = option(None, "seed of the fixed label noise (default: the split seed)")
    # --- model
    backbone: str = option("ViT-B-32", "ViT-B-32 (weights from --clip-path), ViT-B-32-random (same architecture, random "
                                       "weights: benchmarks) or tiny (random init toy model)",
                           choices=BACKBONES)
    clip_path: str = option("./ViT-B-32.pt", "OpenAI CLIP weights: TorchScript archive, state dict or safetensors")
    output_dim: int = option(64, "hash code length in bits", aliases=("--bits",))
    head_init: str = option("default", "initialisation of the default hash heads: kaiming (kaiming_uniform fan_out, "
                                       "zero bias: the QinLab LinearHash) or default (PyTorch's Linear init)",
                            choices=("kaiming", "default"))
    head_dropout: float = option(0.2, "dropout before tanh in the default hash heads")
    # --- optimisation (BertAdam with warmup-cosine, as the reference repos)
    epochs: int = option(100, "training epochs")
    batch_size: int = option(64, "training batch size")
    lr: float = option(1e-3, "learning rate of the hash heads and other new parts")
    clip_lr: float = option(1e-5, "learning rate of the CLIP backbone")
    weight_decay: float = option(0.2, "BertAdam decoupled weight decay (all parameters)")
    warmup_proportion: float = option(0.1, "fraction of the steps with linear learning-rate warmup")
    max_grad_norm: float = option(1.0, "BertAdam per-tensor gradient norm clip (<= 0: off)")
    precision: str = option("fp32", "autocast precision on GPU (fp32 master weights)", choices=("fp32", "bf16", "fp16"))
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    # --- evaluation
    eval_every: int = option(1, "evaluate every N epochs (and after the last)", aliases=("--valid-freq",))
    eval_batch_size: int = option(256, "batch size for encoding the query and database sets")
    patience: int = option(0, "stop when this many evaluations in a row bring no new best (0: train every epoch)")
    map_k: int | None = option(None, "also report mAP@K (first min(K, R) relevant items, the repos' definition)")
    # --- run
    save_dir: str | None = option(None, "run folder (default result/<method>/<dataset>/<bits>/<timestamp>)")
    result_dir: str = option("result", "parent of the default run folders")
    resume: str | None = option(None, "continue a run from its folder (its config and folder) or from a last.pt")
    overwrite: bool = option(False, "let --save-dir replace the files of a finished run there")
    test: bool = option(False, "only evaluate --pretrained weights and write the outputs")
    pretrained: str | None = option(None, "checkpoint to evaluate with --test, or to start training from")
    keep_last: bool = option(False, "keep last.pt (optimizer state, for --resume) after a finished run")
    save_best: bool = option(True, "write best.pt (model weights of the best evaluation)")
    progress: bool = option(True, "show progress bars")
    tensorboard: bool = option(False, "write TensorBoard event files to <run folder>/tensorboard (needs the "
                                      "tensorboard package)")
    tensorboard_every: int = option(10, "with --tensorboard: log the loss terms and learning rates every N steps")

    dataset_defaults = {"demo": DEMO_DEFAULTS}

    def validate(self) -> None:
        super().validate()
        for name in ("epochs", "batch_size", "output_dim", "eval_every", "eval_batch_size", "prefetch_factor",
                     "tensorboard_every"):
            value = getattr(self, name)
            require(value >= 1, name, value, "must be at least 1")
        for name in ("query_num", "train_num", "map_k"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, value, "must be at least 1 (or left out for the default)")
        for name in ("lr", "clip_lr", "weight_decay", "seed", "train_seed", "num_workers", "patience"):
            value = getattr(self, name)
            require(value is None or value >= 0, name, value, "must not be negative")
        require(0 < self.warmup_proportion < 1, "warmup_proportion", self.warmup_proportion,
                "must lie in (0, 1) (the warmup-cosine schedule)")
        require(0 <= self.head_dropout < 1, "head_dropout", self.head_dropout, "must lie in [0, 1)")
        require(0 <= self.label_noise <= 1, "label_noise", self.label_noise, "must lie in [0, 1]")
        require(3 <= self.max_words <= 77, "max_words", self.max_words, "must lie in [3, 77] (CLIP's context length)")
        require(not (self.test and self.resume), "resume", self.resume, "cannot be combined with --test")
