"""Helper of tests/test_distributed.py (not a test): for each method, the gradients of one training step on the
first global batch, saved by rank 0 (dropout off).

    python tests/ddp_grad_probe.py OUT_DIR METHOD[,METHOD...] [main.py flags]            # one process
    torchrun --nproc_per_node 2 tests/ddp_grad_probe.py OUT_DIR METHOD[,...] [flags]      # the same global batches

OUT_DIR/<METHOD>.pt holds {parameter name: gradient}.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from main import parse_config  # noqa: E402


def zero_dropout(module: torch.nn.Module) -> None:
    """Dropout masks come from each process's random stream: turn every dropout off."""
    for child in module.modules():
        if isinstance(child, torch.nn.Dropout):
            child.p = 0.0
        elif isinstance(child, torch.nn.MultiheadAttention):
            child.dropout = 0.0


def probe(method: str, out_dir: Path, flags: list[str]) -> None:
    trainer_cls, cfg = parse_config(["--method", method, *flags])
    trainer = trainer_cls(cfg)
    trainer.setup()
    zero_dropout(trainer.model)
    if isinstance(trainer.criterion, torch.nn.Module):
        zero_dropout(trainer.criterion)
    trainer.model.train()
    trainer.on_epoch_start(0)
    trainer.train_loader.batch_sampler.set_epoch(0)
    batch = trainer.to_device(next(iter(trainer.train_loader)))
    trainer.zero_grad()
    trainer.step_module(batch)["loss"].backward()
    if trainer.dist.is_main:
        named = list(trainer.model.named_parameters())
        if isinstance(trainer.criterion, torch.nn.Module):
            named += [("criterion." + n, p) for n, p in trainer.criterion.named_parameters()]
        torch.save({name: p.grad.clone() for name, p in named if p.grad is not None}, out_dir / f"{method}.pt")
    trainer.dist.barrier()


def main() -> None:
    out_dir, methods, flags = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3:]
    for method in methods:
        probe(method, out_dir, flags)


if __name__ == "__main__":
    main()
