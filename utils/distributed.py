"""Process-group setup for `torchrun` (NCCL on GPU, gloo on CPU) and exact gathers of evaluation codes."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from utils.errors import UserError


@dataclass
class DistContext:
    """Rank, world size and device of this process (world size 1 without torchrun)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, count: int) -> np.ndarray:
        """This rank's contiguous share of `count` items; shares differ by at most one and nothing repeats."""
        return np.array_split(np.arange(count), self.world_size)[self.rank]

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows in rank order, without the padding a plain all_gather would keep."""
        if not self.enabled:
            return rows
        size = torch.tensor([rows.shape[0]], device=rows.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        padded[: rows.shape[0]] = rows
        parts = [torch.zeros_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([part[: int(s.item())] for part, s in zip(parts, sizes)])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def resolve_device(flag: str) -> torch.device:
    """`auto` is the first GPU if there is one, else the CPU; asking for a missing GPU is a UserError."""
    if flag == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(flag)
    except RuntimeError:
        raise UserError(f"unknown device {flag!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {flag}: no CUDA GPU is available here; use --device cpu")
    return device


def setup_distributed(device_flag: str) -> DistContext:
    """Join the process group that `torchrun` describes in the environment, or run as a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext(0, 1, resolve_device(device_flag))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_flag != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), device)


def teardown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
