"""Helper of tests/test_distributed.py (not a test): the gradients of the first training step, saved by rank 0
(dropout off).

    python tests/ddp_grad_probe.py OUT.pt [main.py flags]            # one process
    torchrun --nproc_per_node 2 tests/ddp_grad_probe.py OUT.pt [...]  # the same global batch over two
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from main import parse_config  # noqa: E402


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    trainer_cls, cfg = parse_config(argv)
    trainer = trainer_cls(cfg)
    trainer.setup()
    trainer.model.train()
    for module in trainer.model.modules():  # dropout masks depend on each process's random stream
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    trainer.train_loader.batch_sampler.set_epoch(0)
    batch = trainer.to_device(next(iter(trainer.train_loader)))
    trainer.step_module(batch)["loss"].backward()
    if trainer.dist.is_main:
        named = list(trainer.model.named_parameters())
        if isinstance(trainer.criterion, torch.nn.Module):
            named += [("criterion." + n, p) for n, p in trainer.criterion.named_parameters()]
        torch.save({name: p.grad.clone() for name, p in named if p.grad is not None}, out)


if __name__ == "__main__":
    main()
