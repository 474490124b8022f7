"""Training batches that are the same global batches with or without torchrun."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler[list[int]]):
    """Shuffled global batches of `batch_size` items; each of `world_size` processes yields its contiguous share.

    The order is `torch.randperm(num_items)` from a generator seeded `seed * 1000 + epoch`, cut into consecutive
    global batches (the last one may be smaller): exactly the batches a shuffling single-process DataLoader
    gave with that generator before this sampler existed, so earlier runs reproduce. Under torchrun rank r takes
    the r-th of `world_size` near-equal contiguous parts of every global batch, so the processes together see the
    single-process batches item for item, and their rows gathered in rank order are the single-process batch in
    its order. A last global batch with fewer items than processes
    is dropped under torchrun (a process would get none).
    """

    def __init__(self, num_items: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        super().__init__()
        if batch_size < world_size:
            raise ValueError(f"global batch {batch_size} is smaller than the {world_size} processes")
        self.num_items, self.batch_size, self.rank, self.world_size = num_items, batch_size, rank, world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation the next iteration yields."""
        self.epoch = epoch

    def _global_batches(self) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # what a DataLoader takes for worker seeds
        order = torch.randperm(self.num_items, generator=generator)
        batches = list(order.split(self.batch_size))
        if batches and len(batches[-1]) < self.world_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._global_batches():
            yield np.array_split(batch.numpy(), self.world_size)[self.rank].tolist()

    def __len__(self) -> int:
        full, rest = divmod(self.num_items, self.batch_size)
        return full + (rest >= self.world_size if rest else 0)
