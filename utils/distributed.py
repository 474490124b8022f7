"""Process-group setup for `torchrun` (NCCL on GPU, gloo on CPU) and exact gathers of evaluation codes."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

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

    def global_count(self, count: int) -> int:
        """The sum of `count` over all processes (e.g. the global batch size of this step)."""
        if not self.enabled:
            return count
        total = torch.tensor([count], device=self.device)
        dist.all_reduce(total)
        return int(total.item())

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows in rank order, without the padding a plain all_gather would keep."""
        return self.gather_batch(rows)[0]

    def gather_batch(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every rank's rows of each tensor, concatenated in rank order: this step's whole global batch.

        Differentiable: a loss computed on the gathered rows by every rank gives, after DDP averages the
        gradients, exactly the gradient of that loss in one process holding the global batch (the backward
        of the gather sums each rank's gradients for the rows it owns). The identity in a single process.
        """
        if not self.enabled:
            return tensors
        size = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        counts = [int(s.item()) for s in sizes]
        longest = max(counts)
        gathered = []
        for tensor in tensors:
            padded = torch.cat([tensor, tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))])
            parts = dist_nn.all_gather(padded) if tensor.requires_grad else self._all_gather_plain(padded)
            gathered.append(torch.cat([part[:count] for part, count in zip(parts, counts)]))
        return tuple(gathered)

    def _all_gather_plain(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return parts

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


class _GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (1d, 2d or 3d) whose training statistics cover the whole global batch, for CPU process groups
    (PyTorch's SyncBatchNorm is GPU-only). The sums travel through a differentiable all_reduce, so gradients
    match one process holding the whole batch."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        stats = dist_nn.all_reduce(torch.stack([x.sum(dim=dims), x.square().sum(dim=dims)]))
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
        dist.all_reduce(count)
        n = count.item()
        mean = stats[0] / n
        var = (stats[1] / n - mean.square()).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), momentum)
        shape = [1, -1] + [1] * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return x * scale.view(shape) + shift.view(shape)


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers synchronised over the process group: SyncBatchNorm on GPU, the gloo version on CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) in _BATCHNORMS:
            synced = _GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                        child.track_running_stats)
            # the same parameter and buffer objects: optimizers built before the conversion keep working
            synced.weight, synced.bias = child.weight, child.bias
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(synced, key, getattr(child, key))
            setattr(module, name, synced.train(child.training))
        else:
            sync_batchnorm(child, device)
    return module


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


def requested_world_size() -> int:
    """The number of processes `torchrun` started (1 without torchrun), before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_distributed(device_flag: str) -> DistContext:
    """Join the process group that `torchrun` describes in the environment, or run as a single process."""
    world_size = requested_world_size()
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
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
