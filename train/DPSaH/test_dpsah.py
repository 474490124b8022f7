"""DPSaH: reference fixtures (fixtures.json, computed by the reference code in float64), the quadruplet loss
against an explicit enumeration, bit noise, classifier variants and the balance term."""
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from train.common import label_similarity
from train.DPSaH.loss import DPSaHLoss, apply_bit_noise, balance_penalty, bit_noise, quadruplet_loss
from train.DPSaH.trainer import DPSaHConfig, Trainer
from train.testing import build_trainer, stub_batch
from utils.errors import UserError

FIXTURES = json.loads((Path(__file__).parent / "fixtures.json").read_text())


def t(values, requires_grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)


def det(shape, phase, scale=1.0):
    """scale * sin(0.61 i + phase), i = 0..numel-1: the fixture script's deterministic values."""
    n = math.prod(shape)
    return scale * torch.sin(0.61 * torch.arange(n, dtype=torch.float64) + phase).reshape(shape)


# ---------------------------------------------------------------- quadruplet loss
@pytest.mark.parametrize("case", FIXTURES["quadruplet"],
                         ids=["intra", "cross", "cross-zero-row", "no-positives", "no-negatives"])
def test_quadruplet_fixture(case):
    labels = t(case["labels"])
    x = (0.9 * det((len(labels), case["bits"]), case["phase"])).requires_grad_()
    y = (0.9 * det((len(labels), case["bits"]), case["phase"] + 2.0)).requires_grad_() if case["cross"] else x
    loss, count = quadruplet_loss(x, y, labels)
    assert count == case["mined"]
    assert loss.item() == pytest.approx(case["loss"], rel=1e-12, abs=1e-15)
    loss.backward()
    if case["grad_x"] is None:
        assert torch.all(x.grad == 0)
    else:
        torch.testing.assert_close(x.grad, t(case["grad_x"]), rtol=1e-10, atol=1e-14)
    if case["cross"] and case["grad_y"] is not None:
        torch.testing.assert_close(y.grad, t(case["grad_y"]), rtol=1e-10, atol=1e-14)


def test_fixtures_exercise_the_miner():
    mined = [(c["all_quadruplets"], c["mined"]) for c in FIXTURES["quadruplet"]]
    assert any(0 < m < a for a, m in mined)


def enumerated_quadruplet_loss(x, y, labels, margin):
    """The definition, quadruplet by quadruplet (the reference's get_all_quadruplets + miner + mean)."""
    d = -(F.normalize(x, dim=1) @ F.normalize(y, dim=1).T)
    shares = label_similarity(labels)
    terms = []
    for a in range(len(labels)):
        positives = [j for j in range(len(labels)) if j != a and shares[a, j]]
        negatives = [n for n in range(len(labels)) if not shares[a, n] and n != a]
        for (j, k), n in itertools.product(itertools.combinations(positives, 2), negatives):
            if d[a, n] - d[a, j] > margin and d[a, n] - d[a, k] > margin:
                continue  # the miner drops quadruplets with both hinges inactive
            terms.append(torch.relu(d[a, j] - d[a, n] + margin) + torch.relu(d[a, k] - d[a, n] + margin))
    return (torch.stack(terms).mean() if terms else x.sum() * 0), len(terms)


@pytest.mark.parametrize("seed", range(4))
def test_quadruplet_loss_equals_enumeration(seed):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(8, 4, generator=g) < 0.35).double()
    x = torch.randn(8, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(8, 6, generator=g, dtype=torch.float64, requires_grad=True)
    ours, count = quadruplet_loss(x, y, labels, 0.3)
    expected, expected_count = enumerated_quadruplet_loss(x, y, labels, 0.3)
    assert count == expected_count
    assert ours.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-15)
    if count:
        grads = torch.autograd.grad(ours, (x, y))
        for a, b in zip(grads, torch.autograd.grad(expected, (x, y))):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_quadruplet_loss_is_scale_invariant():
    labels = t(FIXTURES["quadruplet"][0]["labels"])
    x, y = det((6, 4), 0.0), det((6, 4), 1.0)
    assert quadruplet_loss(3 * x, 0.5 * y, labels)[0].item() == pytest.approx(quadruplet_loss(x, y, labels)[0].item())


def test_single_sample_has_no_quadruplet():
    x = torch.randn(1, 4, requires_grad=True)
    loss, count = quadruplet_loss(x, x, torch.ones(1, 3))
    loss.backward()
    assert count == 0 and loss.item() == 0 and torch.all(x.grad == 0)


# ---------------------------------------------------------------- bit noise
@pytest.mark.parametrize("batch, bits, per_row", [(6, 8, 2), (5, 10, 2), (4, 10, 3), (1, 16, 4), (3, 64, 18)])
def test_bit_noise_counts_and_balance(batch, bits, per_row):
    mask, values = bit_noise(batch, bits, 0.3, torch.Generator().manual_seed(0))
    assert mask.shape == values.shape == (batch, bits)
    assert torch.all(mask.sum(dim=1) == per_row)
    assert torch.all(values[~mask] == 0) and torch.all(values[mask].abs() == 1)
    assert values.sum().item() == 0  # half −1, half +1 over the batch


def test_bit_noise_is_reproducible_with_a_generator():
    a = bit_noise(4, 32, 0.3, torch.Generator().manual_seed(3))
    b = bit_noise(4, 32, 0.3, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_apply_bit_noise_values_and_gradient():
    codes = torch.tensor([[0.2, -0.4, 0.6]], requires_grad=True)
    mask = torch.tensor([[False, True, False]])
    values = torch.tensor([[0.0, 1.0, 0.0]])
    out = apply_bit_noise(codes, mask, values, 0.3)
    torch.testing.assert_close(out, torch.tensor([[0.2 / 0.7, 1.0, 0.6 / 0.7]]))
    out.sum().backward()
    torch.testing.assert_close(codes.grad, torch.tensor([[1 / 0.7, 0.0, 1 / 0.7]]))


# ---------------------------------------------------------------- the whole loss, both classifier inputs
def fixture_loss(case, classifier_input, balance_on):
    loss = DPSaHLoss(case["bits"], case["classes"], classifier_input=classifier_input, balance_on=balance_on).double()
    with torch.no_grad():
        loss.classifier.weight.copy_(det((case["classes"], case["bits"]), case["phase"] + 2.1, case["bits"] ** -0.5))
        loss.classifier.bias.copy_(det((case["classes"],), case["phase"] + 3.7, 0.1))
    b = len(case["labels"])
    h_i = (0.8 * det((b, case["bits"]), case["phase"])).requires_grad_()
    h_t = (0.8 * det((b, case["bits"]), case["phase"] + 1.3)).requires_grad_()
    return loss, h_i, h_t


def injected(variant):
    return tuple((torch.tensor(mask), t(values)) for mask, values in variant["noise"])


@pytest.mark.parametrize("case", FIXTURES["classifier"], ids=["b6-k8", "b5-k10-odd"])
@pytest.mark.parametrize("classifier_input", ["image", "own"])
def test_reference_fixture_with_label_balance(case, classifier_input):
    """balance_on="labels" is the reference: values and gradients as the reference's training step."""
    ref = case[classifier_input]
    loss, h_i, h_t = fixture_loss(case, classifier_input, "labels")
    out = loss(h_i, h_t, t(case["labels"]), noise=injected(ref))
    for name in ("quad_image", "quad_text", "quad_cross", "ce_image", "ce_text"):
        assert out[name].item() == pytest.approx(ref["terms"][name], rel=1e-12)
    assert out["balance"].item() == pytest.approx(ref["terms"]["balance_labels"], abs=1e-15)
    assert out["loss"].item() == pytest.approx(ref["total_reference_balance"], rel=1e-12)
    out["loss"].backward()
    torch.testing.assert_close(h_i.grad, t(ref["grad_image"]), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(h_t.grad, t(ref["grad_text"]), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(loss.classifier.weight.grad, t(ref["grad_weight"]), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(loss.classifier.bias.grad, t(ref["grad_bias"]), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("case", FIXTURES["classifier"], ids=["b6-k8", "b5-k10-odd"])
def test_default_fixture_own_input_and_code_balance(case):
    """Default: the text term classifies the text codes; the balance penalty is on the codes (its value and
    gradient computed independently in the fixture script from the formula)."""
    ref = case["own"]
    loss, h_i, h_t = fixture_loss(case, "own", "codes")
    out = loss(h_i, h_t, t(case["labels"]), noise=injected(ref))
    assert out["balance"].item() == pytest.approx(ref["terms"]["balance_codes"], rel=1e-12)
    expected = ref["total_reference_balance"] + 0.3 * (ref["terms"]["balance_codes"] - ref["terms"]["balance_labels"])
    assert out["loss"].item() == pytest.approx(expected, rel=1e-12)
    out["loss"].backward()
    jac = ref["grad_balance_codes"]
    torch.testing.assert_close(h_i.grad, t(ref["grad_image"]) + 0.3 * t(jac["image"]), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(h_t.grad, t(ref["grad_text"]) + 0.3 * t(jac["text"]), rtol=1e-10, atol=1e-14)


def test_reference_classifier_input_ignores_text_codes_in_classifier_terms():
    case = FIXTURES["classifier"][0]
    loss, h_i, h_t = fixture_loss(case, "image", "labels")
    out = loss(h_i, h_t, t(case["labels"]), noise=injected(case["image"]))
    (grad_text,) = torch.autograd.grad(out["ce_text"], h_t, allow_unused=True)
    assert grad_text is None
    own, h_i2, h_t2 = fixture_loss(case, "own", "labels")
    (grad_text,) = torch.autograd.grad(own(h_i2, h_t2, t(case["labels"]), noise=injected(case["own"]))["ce_text"], h_t2)
    assert torch.any(grad_text != 0)


def test_label_balance_is_a_constant():
    loss = DPSaHLoss(4, 3, balance_on="labels")
    h = torch.randn(5, 4, requires_grad=True)
    labels = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0]])
    out = loss(h, h.detach().clone(), labels)
    assert not out["balance"].requires_grad
    assert out["balance"].item() == pytest.approx(0.1 * torch.tensor([0.1, 0.1, 0.3]).mean().item())


def test_code_balance_penalty():
    assert balance_penalty(torch.tensor([[1.0, -1.0], [-1.0, -1.0]])).item() == pytest.approx(0.25)
    assert balance_penalty(torch.tensor([[1.0, 1.0], [-1.0, -1.0]])).item() == 0.0


def test_classifier_follows_bits_and_classes():
    loss = DPSaHLoss(16, 80)
    assert tuple(loss.classifier.weight.shape) == (80, 16)
    out = loss(torch.randn(6, 16).tanh(), torch.randn(6, 16).tanh(), (torch.rand(6, 80) < 0.1).float())
    assert torch.isfinite(out["loss"])


def test_invalid_options():
    with pytest.raises(ValueError, match="classifier_input"):
        DPSaHLoss(8, 3, classifier_input="text")
    with pytest.raises(ValueError, match="balance_on"):
        DPSaHLoss(8, 3, balance_on="bits")


def test_bf16_autocast_gives_float32_loss():
    loss = DPSaHLoss(8, 3)
    h_i, h_t = torch.randn(6, 8).tanh().bfloat16(), torch.randn(6, 8).tanh().bfloat16()
    labels = t(FIXTURES["classifier"][0]["labels"]).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(h_i, h_t, labels, generator=torch.Generator().manual_seed(0))
    assert out["loss"].dtype == torch.float32


# ---------------------------------------------------------------- trainer
def dpsah_trainer(**options):
    return build_trainer(Trainer, num_classes=3, output_dim=8, epochs=1, **options)


def test_config_defaults_follow_the_reference():
    cfg = DPSaHConfig()
    assert (cfg.output_dim, cfg.epochs, cfg.batch_size, cfg.head_init) == (128, 100, 128, "kaiming")
    assert (cfg.lr, cfg.clip_lr, cfg.warmup_proportion, cfg.weight_decay) == (1e-3, 1e-5, 0.1, 0.2)
    assert (cfg.margin, cfg.flip_ratio, cfg.classifier_weight, cfg.balance_weight) == (0.3, 0.3, 0.1, 0.3)
    assert (cfg.classifier_input, cfg.balance_on, cfg.train_classifier) == ("own", "codes", True)
    assert DPSaHConfig.defaults_for("demo")["head_init"] == "default"
    assert "head_init" not in DPSaHConfig.defaults_for("flickr25k")


@pytest.mark.parametrize("flag, value", [("flip_ratio", 1.0), ("margin", -0.1), ("classifier_input", "text")])
def test_config_refuses_bad_values(flag, value):
    with pytest.raises(UserError, match=flag.replace("_", "-")):
        DPSaHConfig(**{flag: value})


def optimizer_params(trainer):
    return {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}


@pytest.mark.parametrize("train_classifier", [True, False])
def test_classifier_trained_only_when_asked(train_classifier):
    trainer = dpsah_trainer(train_classifier=train_classifier)
    classifier = list(trainer.criterion.classifier.parameters())
    assert all(p.requires_grad == train_classifier for p in classifier)
    assert all((id(p) in optimizer_params(trainer)) == train_classifier for p in classifier)
    assert {id(p) for p in trainer.model.parameters()} <= optimizer_params(trainer)
    before = [p.detach().clone() for p in classifier]
    head_before = trainer.model.image_head.fc.weight.detach().clone()
    batch = stub_batch(trainer, rows=8)
    batch["label"] = torch.tensor([[1.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0],
                                   [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 1]])
    for step in range(2):  # the warmup's first learning rate is 0
        trainer.global_step = step
        out = trainer.optimization_step(batch)
    assert out["ce_image"] > 0 and out["quad_image"] > 0
    moved = [not torch.equal(a, p) for a, p in zip(before, classifier)]
    assert all(moved) if train_classifier else not any(moved)
    assert not torch.equal(head_before, trainer.model.image_head.fc.weight)


def test_bit_noise_comes_from_the_step_generator():
    trainer = dpsah_trainer(head_dropout=0.0)
    batch = stub_batch(trainer, rows=6)
    trainer.global_step = 5
    first = trainer.training_step(batch)
    again = trainer.training_step(batch)
    assert first["ce_image"].item() == again["ce_image"].item()
    assert first["ce_text"].item() == again["ce_text"].item()
    image, text = trainer.model(batch["image"], batch["text"])
    generator = trainer.step_generator()
    noise = tuple(bit_noise(6, 8, 0.3, generator) for _ in range(2))
    expected = trainer.criterion(image, text, batch["label"], noise=noise)
    assert first["loss"].item() == pytest.approx(expected["loss"].item(), rel=1e-6)
    trainer.global_step = 6
    assert trainer.training_step(batch)["ce_image"].item() != first["ce_image"].item()


def test_encode_gives_sign_codes_without_noise():
    trainer = dpsah_trainer()
    trainer.model.eval()
    batch = stub_batch(trainer, rows=5)
    (image, text), = trainer.encode(batch).values()
    assert image.shape == text.shape == (5, 8)
    assert set(image.unique().tolist()) <= {-1.0, 1.0}
    h_image, _ = trainer.model(batch["image"], batch["text"])
    assert torch.equal(image, torch.sign(h_image))


def test_classifier_is_checkpointed():
    trainer = dpsah_trainer()
    state = trainer.checkpoint_payload(with_optimizers=False)["criterion"]
    assert set(state) == {"classifier.weight", "classifier.bias"}
    other = dpsah_trainer(seed=1)
    other._load_modules_state(trainer.checkpoint_payload(with_optimizers=False), "test")
    assert torch.equal(other.criterion.classifier.weight, trainer.criterion.classifier.weight)
