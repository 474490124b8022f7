"""Template fixtures computed by hand (value and gradient), and a training step on the stub backbone.

A copy of this folder keeps working: the modules are imported by the folder's own name.
"""
import importlib
import math
from pathlib import Path

import pytest
import torch

from train.testing import build_trainer, stub_batch

FOLDER = Path(__file__).resolve().parent.name
loss_module = importlib.import_module(f"train.{FOLDER}.loss")
Trainer = importlib.import_module(f"train.{FOLDER}").Trainer


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_hand_computed_value_and_gradient():
    """I = [(1, 0), (0, 1)], T = [(1, 1), (1, −1)], labels disjoint (targets +1 on the diagonal, −1 off it).

    pairwise(I, T): cosines 1/√2, 1/√2, 1/√2, −1/√2 against targets 1, −1, −1, 1:
        ((1/√2 − 1)² + 3 (1/√2 + 1)²) / 4 = (6 + 2√2) / 4 = 1.5 + √2/2
    pairwise(I, I) = pairwise(T, T) = (0 + 1 + 1 + 0) / 4 = 0.5 (orthogonal pairs against −1)
    quantization: every entry already equals its sign (sign(0) = 0) -> 0
    d loss / d I_1 = (1/2)[(1/√2 − 1)(0, 1/√2) + (1/√2 + 1)(0, −1/√2)] + (2 · 2 · (0, 1)) / 4 = (0, 1 − √2/2)
    (∂cos(a, b)/∂a = b / (|a||b|) − cos(a, b) a / |a|²).
    """
    image = t([[1, 0], [0, 1]]).requires_grad_()
    text = t([[1, 1], [1, -1]])
    out = loss_module.template_loss(image, text, t([[1, 0], [0, 1]]), quantization_weight=0.1)
    assert out["pairwise"].item() == pytest.approx(2.5 + math.sqrt(2) / 2, abs=1e-12)
    assert out["quantization"].item() == 0.0
    assert out["loss"].item() == pytest.approx(2.5 + math.sqrt(2) / 2, abs=1e-12)
    out["loss"].backward()
    assert image.grad[0].tolist() == pytest.approx([0.0, 1 - math.sqrt(2) / 2], abs=1e-12)


def test_hand_computed_quantization():
    """codes (0.5, −0.25): ((0.5 − 1)² + (−0.25 + 1)²) / 2 = 0.40625; gradient 2 (h − sign h) / 2 = (−0.5, 0.75)."""
    codes = t([[0.5, -0.25]]).requires_grad_()
    value = loss_module.quantization_loss(codes)
    value.backward()
    assert value.item() == pytest.approx(0.40625, abs=1e-12)
    assert codes.grad[0].tolist() == pytest.approx([-0.5, 0.75], abs=1e-12)


def test_a_training_step_reaches_the_heads_and_the_backbone():
    trainer = build_trainer(Trainer, num_classes=3, output_dim=8)
    out = trainer.training_step(stub_batch(trainer, rows=6))
    assert set(out) == {"loss", "pairwise", "quantization"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert trainer.model.image_head.fc.weight.grad is not None and trainer.backbone.text.weight.grad is not None
