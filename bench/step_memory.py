"""Peak memory of one training step per method (batch 128, tiny backbone unless told otherwise).

    python -m bench.step_memory [METHOD ...] [--batch-size 128] [--backbone tiny] [--device auto]

Each method runs in its own process: build the trainer on the demo data, load one batch, then one
optimization step (forward, loss, backward, optimizer steps). On a GPU the peak is the allocator's
maximum during the step; on the CPU it is the growth of the process's peak resident memory during the
step (the memory the step needs beyond the model and the batch).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

from main import parse_config
from train.registry import available_methods

ROOT = Path(__file__).resolve().parents[1]


def measure(method: str, batch_size: int, backbone: str, device: str) -> dict:
    """Peak memory (MiB) of one optimization step of `method`, measured in this process."""
    trainer_cls, cfg = parse_config(["--method", method, "--dataset", "demo", "--backbone", backbone, "--batch-size",
                                     str(batch_size), "--device", device, "--no-progress", "--num-workers", "0"])
    trainer = trainer_cls(cfg)
    trainer.setup()
    batch = trainer.to_device(next(iter(trainer.train_loader)))
    trainer.model.train()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        trainer.optimization_step(batch)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"method": method, "peak_MiB": peak / 2**20, "step_MiB": (peak - before) / 2**20, "device": "cuda"}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer.optimization_step(batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": method, "peak_MiB": peak / 1024, "step_MiB": (peak - before) / 1024, "device": "cpu"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.step_memory", description=__doc__.split("\n")[0])
    parser.add_argument("methods", nargs="*", help="methods to measure (default: every registered method)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--backbone", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: measure in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.methods[0], args.batch_size, args.backbone, args.device)))
        return 0
    methods = args.methods or available_methods()
    print(f"peak memory of one training step, batch {args.batch_size}, backbone {args.backbone}")
    print(f"{'method':>10} {'device':>6} {'step MiB':>9} {'peak MiB':>9}")
    for method in methods:
        result = subprocess.run([sys.executable, "-m", "bench.step_memory", method, "--one", "--batch-size",
                                 str(args.batch_size), "--backbone", args.backbone, "--device", args.device],
                                capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"{method:>10} failed: {reason}")
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{method:>10} {row['device']:>6} {row['step_MiB']:9.1f} {row['peak_MiB']:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
