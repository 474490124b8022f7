"""Use a trained model outside training: `load_trained(run)` encodes images and texts to ±1 codes.

    model = load_trained("result/<method>/demo/64/<time>")      # a run folder, or its best.pt
    ids, mask = model.tokenize(["a red star"])
    text_codes = model.encode_texts(ids, mask)                   # (1, bits) in {-1, +1}
    image_codes = model.encode_images(torch.stack([model.image_transform(image)]))

The model is rebuilt from the run's config and its checkpoint alone (no dataset is read): the method's trainer
builds its parts from the facts the checkpoint records (class count and names, training-set size), the weights
are loaded, and the method's `encode` hook runs on batches whose other modality is a filler (an empty caption or a
black image). A CLIP ViT-B/32 backbone is rebuilt from the checkpoint's own weights (no ViT-B-32.pt needed).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from PIL import Image

from dataset.catalog import resolve_dataset
from dataset.transforms import eval_transform
from model.clip import CLIPBackbone, build_backbone, build_clip_from_state_dict
from train.data import DataFacts
from train.registry import load_method
from utils.checkpoint import load_checkpoint
from utils.config import METHOD_KEY, load_yaml_mapping, read_yaml_config
from utils.distributed import DistContext, resolve_device
from utils.errors import UserError
from utils.logs import get_logger
from utils.text import CaptionTokenizer, padding_mask


def resolve_run(path: str | Path) -> tuple[Path, Path]:
    """(best.pt, run folder) of a run folder or of a checkpoint file inside one."""
    path = Path(path)
    if path.is_dir():
        checkpoint = path / "best.pt"
        if not checkpoint.is_file():
            raise UserError(f"{path} holds no best.pt: pass the folder of a finished run (one trained without "
                            "--no-save-best) or a best.pt file")
        return checkpoint, path
    if not path.is_file():
        raise UserError(f"no run folder or checkpoint at {path}: pass a run folder (best.pt + config.yaml) "
                        "or a best.pt")
    return path, path.parent


@contextlib.contextmanager
def _quiet_training_log() -> Iterator[None]:
    """The training logger prints to stdout; building a trainer for inference must not (search --json)."""
    logger = get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class TrainedModel:
    """A trained method that encodes batches of images and texts to ±1 codes (no_grad, eval mode).

    Attributes: `method`, `bits`, `config` (the run's resolved config), `dataset` (its catalog name),
    `class_names` (None where unknown), `image_transform` (PIL image -> tensor, the evaluation transform),
    `checkpoint` (the best.pt file) and `distance` (None: Hamming; else the method's own code distance).
    """

    def __init__(self, trainer: Any, checkpoint: Path, method: str):
        self._trainer = trainer
        self.checkpoint = checkpoint
        self.method = method
        self.config = trainer.cfg
        self.dataset: str = resolve_dataset(trainer.cfg.dataset).name
        names = trainer.facts.class_names or resolve_dataset(self.dataset).class_names
        self.class_names = list(names) if names and len(names) == trainer.num_classes else None
        self.distance: Callable | None = trainer.distance()
        image_size = trainer.backbone.image_size
        self.image_transform = eval_transform(image_size)
        self._tokenizer = CaptionTokenizer(self.config.max_words)
        self._device = trainer.device
        self._filler_image = self.image_transform(Image.new("RGB", (image_size, image_size)))
        self._filler_text = self._tokenizer([""])[0]
        self.bits = int(self.encode_images(self._filler_image[None]).shape[1])

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, L) in the run's text layout and their padding mask (B, L), True at padding."""
        ids = self._tokenizer(list(texts))
        return ids, padding_mask(ids)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """±1 codes (B, bits), float32 on the CPU, of transformed images (B, 3, H, W)."""
        count = images.shape[0]
        texts = self._filler_text.expand(count, -1)
        return self._encode(images, texts, padding_mask(texts), modality=0)

    def encode_texts(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """±1 codes (B, bits), float32 on the CPU, of token ids (B, L) with their padding mask."""
        images = self._filler_image.expand(ids.shape[0], -1, -1, -1)
        return self._encode(images, ids, mask, modality=1)

    @torch.no_grad()
    def _encode(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, modality: int) -> torch.Tensor:
        trainer = self._trainer
        count = ids.shape[0]
        batch = {"image": images, "text": ids, "text_mask": mask,
                 "label": torch.zeros(count, trainer.num_classes), "index": torch.arange(count)}
        with trainer.autocast():
            code_sets = trainer.encode(trainer.to_device(batch))
        return code_sets[trainer.primary_code_set][modality].float().cpu()


def _method_and_config(run_dir: Path, payload: dict[str, Any]) -> tuple[type, Any]:
    """The trainer class and config of a run: its config.yaml where present (the user may have edited it), else the
    checkpoint's copy."""
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        trainer_cls = load_method(str(load_yaml_mapping(str(config_file)).get(METHOD_KEY) or payload["method"]))
        return trainer_cls, trainer_cls.Config(**read_yaml_config(str(config_file), trainer_cls.Config))
    trainer_cls = load_method(payload["method"])
    try:
        return trainer_cls, trainer_cls.Config(**payload["config"])
    except TypeError as exc:
        raise UserError(f"{run_dir} has no config.yaml and the checkpoint's config is unusable ({exc})") from None


def _backbone(config: Any, model_state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The run's backbone architecture: CLIP weights are rebuilt from the checkpoint's own (the loaded state dict
    then overwrites every tensor), random-init backbones are built as in training."""
    if config.backbone != "ViT-B-32":
        return build_backbone(config.backbone, config.clip_path, config.max_words)
    prefix = next((key[:-len("text_projection")] for key in model_state if key.endswith("clip.text_projection")), None)
    if prefix is None:
        raise UserError("the checkpoint holds no CLIP weights (clip.text_projection); is it a best.pt of this framework?")
    clip_state = {key[len(prefix):]: value for key, value in model_state.items() if key.startswith(prefix)}
    return CLIPBackbone(build_clip_from_state_dict(clip_state), config.max_words)


def load_trained(path: str | Path, device: str = "cpu") -> TrainedModel:
    """The trained model of a run folder (best.pt + config.yaml) or of a best.pt, ready to encode on `device`."""
    checkpoint, run_dir = resolve_run(path)
    payload = load_checkpoint(checkpoint)
    if "facts" not in payload:
        raise UserError(f"{checkpoint} was written before checkpoints recorded their data facts; evaluate it once "
                        "with --test --pretrained to write a new best.pt, or retrain")
    trainer_cls, config = _method_and_config(run_dir, payload)
    config = dataclasses.replace(config, device=device, progress=False, num_workers=0, image_cache=False, test=True,
                                 pretrained=str(checkpoint), resume=None, precision="fp32")
    torch_device = resolve_device(device)
    with _quiet_training_log():
        trainer = trainer_cls(config)
        facts = DataFacts.from_record(payload["facts"], torch_device)
        trainer.build_parts(_backbone(config, payload["model"]), facts, steps_per_epoch=1,
                            dist=DistContext(0, 1, torch_device))
        trainer.load_weights_for_test(str(checkpoint))
        trainer.global_step = int(payload.get("global_step", 0))  # draws seeded by the step repeat the evaluation's
        trainer.model.eval()
        if isinstance(trainer.criterion, torch.nn.Module):
            trainer.criterion.eval()
        trainer.on_evaluation_start()
    return TrainedModel(trainer, checkpoint, trainer_cls.name)
