"""DNPH fixtures (README: Fixtures): proxy loss, argmax CE, Hungarian noise targets, full step, proxies, codes."""
import importlib
import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from model.heads import LinearTanhHead
from train.testing import StubBackbone

# the folder name has a hyphen (DNPH-TOMM: case-distinct from DNpH), so the modules are imported by name
Trainer = importlib.import_module("train.DNPH-TOMM").Trainer
loss_module = importlib.import_module("train.DNPH-TOMM.loss")
noise_module = importlib.import_module("train.DNPH-TOMM.noise")
DNPHLoss, proxy_loss = loss_module.DNPHLoss, loss_module.proxy_loss
argmax_cross_entropy = loss_module.argmax_cross_entropy
DNPHModel = importlib.import_module("train.DNPH-TOMM.model").DNPHModel
alignment, random_signs = noise_module.alignment, noise_module.random_signs
assign_targets = noise_module.assign_targets

P = [[1, 0], [0, 1], [-1, 0]]


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def lp(codes_i, codes_t, labels, proxies=P, margin=1.0):
    y = t(labels)
    return proxy_loss(torch.cat([t(codes_i), t(codes_t)]), torch.cat([y, y]), t(proxies), margin).item()


def test_proxy_loss_hand_example():
    assert lp([[1, 0]], [[0, 2]], [[1, 0, 0]]) == pytest.approx(1.759429, abs=1e-6)
    assert proxy_loss(t([[1, 0]]), t([[1, 0, 0]]), t(P), 1.0).item() == pytest.approx(0.349012, abs=1e-6)
    assert proxy_loss(t([[0, 2]]), t([[1, 0, 0]]), t(P), 1.0).item() == pytest.approx(3.169846, abs=1e-6)


def test_proxy_loss_multi_label():
    assert lp([[0.6, 0.8]], [[0.6, 0.8]], [[1, 1, 0]]) == pytest.approx(1.614763, abs=1e-6)


def test_proxy_loss_properties():
    base = lp([[1, 0]], [[0, 2]], [[1, 0, 0]])
    assert lp([[3, 0]], [[0, 0.5]], [[1, 0, 0]], [[2 * v for v in r] for r in P]) == pytest.approx(base, abs=1e-12)
    values = [lp([[1, 0]], [[0, 2]], [[1, 0, 0]], margin=m) for m in (0.0, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(values, values[1:])) and values[0] >= 0
    torch.manual_seed(0)
    for _ in range(5):
        codes, proxies = torch.randn(6, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
        labels = (torch.rand(6, 5) < 0.4).double()
        assert proxy_loss(codes, labels, proxies, 1.0).item() >= 0


def test_argmax_cross_entropy():
    assert argmax_cross_entropy(t([[2, 1, 0]]), t([[0, 1, 1]])).item() == pytest.approx(1.407606, abs=1e-6)


def test_reference_combined_value_proxy_plus_classification():
    loss = DNPHLoss(3, 2)
    with torch.no_grad():
        loss.proxies.copy_(t(P))
    loss = loss.double()
    code, logits, labels = t([[0.6, 0.8]]), t([[2, 1, 0]]), t([[0, 1, 1]])
    out = loss(code, code, logits, logits, labels, noise=t([[1, 1]]))
    assert out["proxy"].item() == pytest.approx(4.917613, abs=1e-6)
    assert (out["proxy"] + out["classification"]).item() == pytest.approx(7.732825, abs=1e-6)


def brute_force_cost(codes, noise):
    cost = torch.cdist(codes, noise)
    return min(sum(cost[i, j].item() for i, j in enumerate(perm)) for perm in itertools.permutations(range(len(noise))))


@pytest.mark.parametrize("rows", [2, 3, 5, 7])
def test_assignment_is_optimal_and_a_permutation(rows):
    generator = torch.Generator().manual_seed(rows)
    codes = torch.rand(rows, 4, generator=generator, dtype=torch.float64) * 2 - 1
    noise = (torch.randint(0, 2, (rows, 4), generator=generator) * 2 - 1).double()
    targets = assign_targets(codes, noise)
    assert (targets - codes).norm(dim=1).sum().item() == pytest.approx(brute_force_cost(codes, noise), abs=1e-9)
    assert sorted(map(tuple, targets.tolist())) == sorted(map(tuple, noise.tolist()))


def test_assignment_recovers_a_permutation():
    noise = t([[1, 1, -1], [-1, 1, 1], [1, -1, -1], [-1, -1, 1], [1, 1, 1]])
    order = [3, 0, 4, 1, 2]
    targets = assign_targets(noise[order], noise)
    assert torch.equal(targets, noise[order])
    assert (targets - noise[order]).norm(dim=1).sum().item() == 0.0


def test_non_squared_cost_matters():
    codes, noise = t([[0, 0.8], [0.9, -0.3], [0.1, -0.4]]), t([[1, 1], [1, -1], [-1, 1]])
    targets = assign_targets(codes, noise)
    assert targets.tolist() == [[-1, 1], [1, -1], [1, 1]]
    assert alignment(codes, targets).item() == pytest.approx(0.566667, abs=1e-6)
    assert (codes * t([[-1, 1], [1, 1], [1, -1]])).sum().item() == pytest.approx(1.9)  # what a max-inner-product
    assert (codes * targets).sum().item() == pytest.approx(1.7)                        # assignment would pick


def test_uniform_term_gradient_and_noise():
    np.random.seed(0)
    noise = random_signs(5, 3)
    assert noise.shape == (5, 3) and set(noise.unique().tolist()) <= {-1.0, 1.0}
    codes = (torch.rand(5, 3, dtype=torch.float64) * 2 - 1).requires_grad_()
    targets = assign_targets(codes, noise)
    (-0.1 * alignment(codes, targets)).backward()
    assert torch.allclose(codes.grad, -0.1 * targets / 5, atol=0, rtol=0)


def full_step_loss():
    loss = DNPHLoss(3, 2)
    with torch.no_grad():
        loss.proxies.copy_(t(P))
    loss = loss.double()
    h_i, h_t = t([[0.9, -0.8], [-0.7, 0.6]]), t([[0.5, 0.4], [-0.3, -0.9]])
    g_i, g_t = t([[2, 1, 0], [0, 0.5, 1]]), t([[1, 0, 0], [0, 0, 3]])
    labels, noise = t([[1, 0, 1], [0, 1, 0]]), t([[1, 1], [-1, -1]])
    return loss, (h_i, h_t, g_i, g_t, labels, noise)


def test_full_step_loss_with_fixed_noise():
    loss, (h_i, h_t, g_i, g_t, labels, noise) = full_step_loss()
    assert torch.equal(assign_targets(h_i, noise), noise) and torch.equal(assign_targets(h_t, noise), noise)
    out = loss(h_i, h_t, g_i, g_t, labels, noise)
    assert (out["proxy"] + out["classification"]).item() == pytest.approx(6.124649, abs=1e-6)
    assert out["uniform"].item() == pytest.approx(1.15, abs=1e-12)
    assert out["loss"].item() == pytest.approx(6.009649, abs=1e-6)


def test_proxy_gradient_exists_but_frozen_proxies_do_not_move():
    loss, args = full_step_loss()
    loss(*args)["loss"].backward()
    assert loss.proxies.grad is not None and loss.proxies.grad.abs().sum() > 0
    trainer = SimpleNamespace(cfg=Trainer.Config(output_dim=2), num_classes=3)
    frozen = Trainer.build_criterion(trainer)
    before = frozen.proxies.detach().clone()
    assert not frozen.proxies.requires_grad and Trainer.extra_optimizers(SimpleNamespace(cfg=trainer.cfg)) == []
    h_i, h_t, *rest = [a.float() for a in args]
    frozen(h_i.requires_grad_(), h_t, *rest)["loss"].backward()
    assert torch.equal(frozen.proxies, before)
    trainer.cfg.proxy_update = "sgd"
    learned = Trainer.build_criterion(trainer)
    (sgd,) = Trainer.extra_optimizers(SimpleNamespace(cfg=trainer.cfg, criterion=learned))
    learned(*[a.float() for a in args])["loss"].backward()
    sgd.step()
    assert not torch.equal(learned.proxies, before) and sgd.param_groups[0]["lr"] == 1e-4


def test_proxy_init_is_seeded_and_scaled():
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    a, b = DNPHLoss(80, 64), DNPHLoss(80, 64)
    assert torch.equal(torch.rand(2), expected) and torch.equal(a.proxies, b.proxies)
    assert a.proxies.std().item() == pytest.approx(1 / 8, rel=0.1)


def test_encoding_uses_the_codes_only():
    torch.manual_seed(3)
    heads = [LinearTanhHead(8, 16, 0.2, init="kaiming") for _ in range(2)]
    model = DNPHModel(StubBackbone(), *heads, num_classes=5).eval()
    batch = {"image": torch.randn(10, 12), "text": torch.randn(10, 6)}
    with torch.no_grad():
        codes = Trainer.encode(SimpleNamespace(model=model, primary_code_set="16"), batch)["16"]
        h_i, h_t, g_i, g_t = model.codes_and_logits(batch["image"], batch["text"])
    assert g_i.shape == g_t.shape == (10, 5)
    for code, h in zip(codes, (h_i, h_t)):
        assert code.shape == (10, 16) and set(code.unique().tolist()) <= {-1.0, 1.0}
        assert torch.equal(code, torch.sign(h))
