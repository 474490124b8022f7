"""What a method learns from the data (class count, training labels...) and the training loader."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from dataset.batch_sampler import GlobalBatchSampler
from dataset.builder import DataBundle
from utils.distributed import DistContext
from utils.errors import UserError


@dataclass
class DataFacts:
    """The facts about the training data that building a method's model and loss may need.

    At training time they come from the loaded data; when a trained model is loaded for inference they come
    from its checkpoint (the training labels are then zeros of the right shape: only memory banks and
    similar training-only state read them, and the checkpoint restores those).
    """

    num_classes: int
    num_train: int
    train_labels: torch.Tensor  # (num_train, num_classes) float 0/1, on the training device
    class_names: tuple[str, ...] | None = None

    @classmethod
    def from_data(cls, data: DataBundle, device: torch.device) -> "DataFacts":
        names = getattr(data, "class_names", None)
        return cls(data.num_classes, len(data.train), data.train.labels.to(device),
                   tuple(names) if names is not None else None)

    def to_record(self) -> dict[str, Any]:
        """The facts as plain values for a checkpoint (without the labels)."""
        return {"num_classes": self.num_classes, "num_train": self.num_train,
                "class_names": list(self.class_names) if self.class_names is not None else None}

    @classmethod
    def from_record(cls, record: dict[str, Any], device: torch.device) -> "DataFacts":
        names = record.get("class_names")
        return cls(int(record["num_classes"]), int(record["num_train"]),
                   torch.zeros(int(record["num_train"]), int(record["num_classes"]), device=device),
                   tuple(names) if names is not None else None)


def worker_count(requested: int | None) -> int:
    """Loader worker processes: the flag's value, else min(8, CPU cores)."""
    return min(8, os.cpu_count() or 1) if requested is None else requested


def loader_options(num_workers: int, prefetch_factor: int) -> dict[str, Any]:
    """DataLoader keyword arguments for `num_workers` worker processes."""
    if num_workers == 0:
        return {"num_workers": 0}
    return {"num_workers": num_workers, "prefetch_factor": prefetch_factor}


def train_loader(data: DataBundle, batch_size: int, dist: DistContext, seed: int, num_workers: int,
                 prefetch_factor: int) -> DataLoader:
    """Shuffled global batches of `batch_size`; under torchrun each process loads its share of every one.

    The order and the workers' seeds come from `seed` and the epoch (`shuffle_for_epoch`).
    """
    if batch_size < dist.world_size:
        raise UserError(f"--batch-size {batch_size} is smaller than the {dist.world_size} processes")
    sampler = GlobalBatchSampler(len(data.train), batch_size, dist.rank, dist.world_size, seed=seed)
    return DataLoader(data.train, batch_sampler=sampler, pin_memory=dist.device.type == "cuda",
                      persistent_workers=num_workers > 0, generator=torch.Generator(),
                      **loader_options(num_workers, prefetch_factor))


def shuffle_for_epoch(loader: DataLoader, seed: int, epoch: int) -> DataLoader:
    """Set `loader` (from `train_loader`) to `epoch`'s order and worker seeds, a function of `seed` and the epoch
    alone (so `--resume` and a second pass over the same epoch see the same batches); returns the loader."""
    loader.batch_sampler.set_epoch(epoch)
    loader.generator.manual_seed(seed * 1000 + epoch)
    return loader
