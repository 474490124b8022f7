"""DNpH fixtures (README: Fixtures), invariances, gradient and encoding properties."""
import itertools
import math
from types import SimpleNamespace

import pytest
import torch

from model.heads import DualHashModel, LinearTanhHead
from train.DNpH import Trainer
from train.DNpH.loss import neighbourhood, qsmi_loss, spherical_similarity
from train.testing import StubBackbone

U_C = [[.5, -.2, .9], [.1, .4, -.3], [-.7, .2, .2]]
V_C = [[.4, -.1, .8], [.3, .5, -.1], [-.6, -.3, .1]]
Y_C = [[1, 0, 0], [0, 1, 1], [1, 0, 1]]


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def loss_value(u, v, y, dtype=torch.float64):
    return qsmi_loss(t(u, dtype), t(v, dtype), t(y, dtype))["loss"].item()


@pytest.mark.parametrize("labels", [[[1, 0], [0, 1], [1, 1]], [[1, 0], [1, 0], [1, 0]], [[1, 0], [0, 1], [0, 0]]])
def test_constant_codes_give_three_b_squared(labels):
    code = [[0.3, -0.7, 0.2]] * 3
    assert loss_value(code, code, labels) == pytest.approx(27.0, abs=1e-6)  # 3 B², minus the eps effect
    assert loss_value(code, code, labels, torch.float32) == pytest.approx(26.999992, abs=2e-5)


def test_hand_example():
    eye = [[1, 0], [0, 1]]
    assert loss_value(eye, eye, eye) == pytest.approx(9.75, abs=1e-6)  # per matrix 2 + 1.25


def test_example_c():
    assert loss_value(U_C, V_C, Y_C) == pytest.approx(20.1897287, abs=1e-7)
    assert loss_value(U_C, V_C, Y_C, torch.float32) == pytest.approx(20.18973, abs=1e-5)


def test_example_c_all_zero_label_row_and_equal_labels():
    assert loss_value(U_C, V_C, [[1, 0, 0], [0, 0, 0], [1, 0, 1]]) == pytest.approx(22.137092, abs=1e-6)
    assert neighbourhood(t([[1, 0, 0], [0, 0, 0], [1, 0, 1]]))[1, 1].item() == 0.0  # self treated as negative
    assert loss_value(U_C, V_C, [[1, 0, 0]] * 3) == pytest.approx(19.217259, abs=1e-6)


def test_example_d():
    assert loss_value([[1, 0], [0, 1], [1, 1]], [[1, 1], [-1, 0], [0, 1]], [[1, 0], [0, 1], [1, 1]]) == \
        pytest.approx(20.438931, abs=1e-6)


def test_invariances():
    base = loss_value(U_C, V_C, Y_C)
    scaled = loss_value([[2 * x for x in r] for r in U_C], [[3 * x for x in r] for r in V_C], Y_C)
    assert scaled == pytest.approx(20.1897289, abs=1e-7)
    assert scaled == pytest.approx(base, abs=1e-6)
    assert loss_value(V_C, U_C, Y_C) == pytest.approx(base, abs=1e-12)
    for order in itertools.permutations(range(3)):
        u, v, y = ([rows[i] for i in order] for rows in (U_C, V_C, Y_C))
        assert loss_value(u, v, y) == pytest.approx(base, abs=1e-12)


def test_gradient_equals_unclamped_positive_form():
    torch.manual_seed(0)
    u, v = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    labels = (torch.rand(6, 4) < 0.3).double()
    u1, v1 = u.clone().requires_grad_(), v.clone().requires_grad_()
    qsmi_loss(u1, v1, labels)["loss"].backward()
    u2, v2 = u.clone().requires_grad_(), v.clone().requires_grad_()
    d = neighbourhood(labels).bool()
    inverse_m = d.double().mean()
    total = sum((1 - s)[d].square().sum() + s.square().sum() * inverse_m
                for s in (spherical_similarity(u2, u2), spherical_similarity(v2, v2), spherical_similarity(u2, v2)))
    total.backward()
    assert torch.allclose(u1.grad, u2.grad, atol=1e-12) and torch.allclose(v1.grad, v2.grad, atol=1e-12)
    assert u1.grad.abs().sum() > 0


def test_lower_bound_and_parts():
    torch.manual_seed(1)
    for _ in range(5):
        u, v = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
        labels = (torch.rand(7, 5) < 0.25).double()
        out = qsmi_loss(u, v, labels)
        negatives = (neighbourhood(labels) == 0).sum().item()
        assert out["loss"].item() >= 3 * negatives
        assert out["loss"].item() == pytest.approx(
            (out["image_image"] + out["text_text"] + out["image_text"]).item(), abs=1e-12)


def test_encoding_is_sign_of_pre_activation():
    torch.manual_seed(2)
    bits = 16
    heads = [LinearTanhHead(8, bits, 0.2, init="kaiming") for _ in range(2)]
    bound = math.sqrt(6 / bits)  # kaiming_uniform fan_out, leaky-relu gain sqrt(2)
    assert heads[0].fc.weight.abs().max() <= bound and heads[0].fc.bias.abs().max() == 0
    model = DualHashModel(StubBackbone(), *heads).eval()
    fake = SimpleNamespace(model=model, primary_code_set=str(bits))
    batch = {"image": torch.randn(10, 12), "text": torch.randn(10, 6)}
    with torch.no_grad():
        codes = Trainer.encode(fake, batch)[str(bits)]
        again = Trainer.encode(fake, batch)[str(bits)]
        pre = (heads[0].fc(model.backbone.encode_image(batch["image"])),
               heads[1].fc(model.backbone.encode_text(batch["text"])))
    for code, repeat, linear in zip(codes, again, pre):
        assert torch.equal(code, repeat)
        assert set(code.unique().tolist()) <= {-1.0, 1.0}
        assert torch.equal(code, torch.sign(linear))
