"""Training throughput of one method: data loading and the model step measured separately, and peak memory.

    python -m bench.train_speed [--method DSPH] [--batch-size 128] [--precision fp32,bf16] [--steps 30]
                                [--backbone ViT-B-32-random] [--num-workers N] [--dataset demo --data-dir DIR]
                                [--patch-embed linear,conv] [--profile]

The model step (forward, loss, backward, every optimizer step) runs on one batch held on the device, so it
measures the model alone; the data loader is timed on its own over the training set with the run's workers.
The default backbone is the real ViT-B/32 architecture with random weights (nothing to download). Prints one
line per precision: steps/s, images/s of the model step, images/s of the loader, peak memory. `--profile` then
prints, per precision, the operators that took the most device time over 3 more steps (torch.profiler), to see
where a slow precision loses its time. `--patch-embed linear,conv` also times each precision with the ViT's patch
embedding as the original convolution (the backbone computes it as a matrix product; model/patch_embed.py).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from main import parse_config
from model.patch_embed import as_convolution


def build_trainer(args, precision: str):
    flags = ["--method", args.method, "--dataset", args.dataset, "--backbone", args.backbone, "--batch-size",
             str(args.batch_size), "--precision", precision, "--no-progress", "--device", args.device,
             "--output-dim", str(args.bits)]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    if args.num_workers is not None:
        flags += ["--num-workers", str(args.num_workers)]
    if args.image_cache:
        flags += ["--image-cache"]
    trainer_cls, cfg = parse_config(flags)
    trainer = trainer_cls(cfg)
    trainer.setup()
    return trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model_step(trainer, steps: int, warmup: int) -> tuple[float, float]:
    """(seconds per step, peak memory in GiB) of optimization_step on one fixed batch."""
    batch = trainer.to_device(next(iter(trainer.train_loader)))
    trainer.model.train()
    for _ in range(warmup):
        trainer.optimization_step(batch)
    device = trainer.device
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.optimization_step(batch)
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS (KiB -> GiB)
    return seconds, peak


def profile_model_step(trainer, steps: int = 3, rows: int = 15) -> str:
    """Table of the operators with the most self time (device time on a GPU) over `steps` model steps."""
    from torch.profiler import ProfilerActivity, profile

    batch = trainer.to_device(next(iter(trainer.train_loader)))
    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            trainer.optimization_step(batch)
        sync(trainer.device)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def time_loader(trainer, batches: int) -> float:
    """Images per second delivered by the training loader (first batch excluded: worker start-up)."""
    loader = iter(trainer.train_loader)
    next(loader)
    images, start = 0, time.perf_counter()
    for i, batch in enumerate(loader):
        images += batch["image"].shape[0]
        if i + 1 >= batches:
            break
    return images / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="DSPH")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--loader-batches", type=int, default=10)
    parser.add_argument("--backbone", default="ViT-B-32-random")
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--image-cache", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--patch-embed", default="linear",
                        help="comma-separated: linear (the backbone's), conv (the original convolution; ViT only)")
    parser.add_argument("--profile", action="store_true", help="also print the costliest operators per precision")
    args = parser.parse_args(argv)

    rows = []
    embeds = args.patch_embed.split(",")
    if set(embeds) - {"linear", "conv"}:
        parser.error(f"--patch-embed takes linear and/or conv, not {args.patch_embed!r}")
    if "conv" in embeds and args.backbone == "tiny":
        parser.error("--patch-embed conv needs a ViT backbone; the tiny backbone's image tower is a ResNet")
    for precision, embed in [(p, e) for p in args.precision.split(",") for e in embeds]:
        label = precision if len(embeds) == 1 else f"{precision}/{embed}"
        trainer = build_trainer(args, precision)
        if embed == "conv":
            visual = trainer.backbone.clip.visual
            visual.conv1 = as_convolution(visual.conv1)
        seconds, peak = time_model_step(trainer, args.steps, args.warmup)
        if args.profile:
            print(f"--- {label}: operators with the most self time over 3 steps")
            print(profile_model_step(trainer))
        loader_rate = time_loader(trainer, args.loader_batches)
        rows.append((label, 1 / seconds, args.batch_size / seconds, loader_rate, peak))
        device = str(trainer.device) + (f" ({torch.cuda.get_device_name(trainer.device)})"
                                        if trainer.device.type == "cuda" else "")
        del trainer
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(f"{args.method}, backbone {args.backbone}, batch {args.batch_size}, {args.bits} bits, device {device}, "
          f"torch {torch.__version__}")
    print(f"{'precision':>12} {'steps/s':>8} {'model img/s':>12} {'loader img/s':>13} {'peak GiB':>9}")
    for label, steps, images, loader_rate, peak in rows:
        print(f"{label:>12} {steps:8.2f} {images:12.1f} {loader_rate:13.1f} {peak:9.2f}")
    for label, steps, *_ in rows[1:]:
        print(f"speed-up of {label} over {rows[0][0]}: {steps / rows[0][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
