"""DPBE fixtures (README: Fixtures): closed-form curvature vs torch.func, posterior, loss, triplet count, codes."""
import math

import pytest
import torch
from torch.func import functional_call, hessian, jacrev, vmap
from torch.nn.utils import parameters_to_vector

from train.common import label_overlap
from train.DPBE.laplace import (
    L2_EPS,
    LaplaceHashHead,
    count_triplets,
    diag_ggn,
    hessian_scale,
    l2_normalise,
    posterior_scale,
)
from train.DPBE.loss import affinity, reduce_samples, similarity_losses
from train.testing import StubBackbone, build_trainer


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def reference_l2(h):
    """The reference Linear -> L2Norm output (without the idempotent re-normalisation)."""
    return h / (h.norm(dim=-1, keepdim=True) + L2_EPS)


def closed_form(features, head: torch.nn.Linear):
    return diag_ggn(features, head.weight[None], head.bias[None])[0]


# ---------------------------------------------------------------- curvature
def test_tiny_hessian_fixture():
    weight, bias = t([[1, 0], [0, 2]]), t([0, 0])
    out = diag_ggn(t([[3, 2]]), weight[None], bias[None])[0]
    expected = [0.2303999078, 0.1023999590, 0.1295999482, 0.0575999770, 0.0255999898, 0.0143999942]
    assert out.tolist() == pytest.approx(expected, rel=0, abs=1e-10)  # the reference values have 10 decimals
    assert hessian_scale(10**6, 10000, 5000) == 2e4


def random_head(d_in=6, k=4, seed=0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(d_in, k).double()
    return head, torch.randn(5, d_in, dtype=torch.float64)


def test_closed_form_matches_jacrev_ggn_and_layout():
    head, x = random_head()
    params = dict(head.named_parameters())

    def output(p, xi):
        return reference_l2(functional_call(head, p, (xi,)))

    jac = vmap(jacrev(output), in_dims=(None, 0))(params, x)  # per item: (K, *param shape)
    ggn = torch.cat([jac["weight"].square().sum(1).mean(0).flatten(), jac["bias"].square().sum(1).mean(0)])
    assert ggn.shape == parameters_to_vector(head.parameters()).shape
    assert torch.allclose(closed_form(x, head), ggn, rtol=1e-8, atol=0)


def test_closed_form_matches_torch_func_hessian():
    """At θ0 the Hessian of ½ mean_b ||z_b(θ) − z_b(θ0)||² is exactly the GGN JᵀJ (zero residual)."""
    head, x = random_head(5, 3, seed=1)
    theta0 = parameters_to_vector(head.parameters()).detach()
    k, d = head.weight.shape
    target = reference_l2(head(x)).detach()

    def objective(theta):
        z = reference_l2(x @ theta[:k * d].view(k, d).T + theta[k * d:])
        return 0.5 * (z - target).square().sum(-1).mean()

    full = hessian(objective)(theta0)
    assert torch.allclose(closed_form(x, head), full.diagonal(), rtol=1e-8, atol=0)


def test_closed_form_batched_samples_and_eps_limit():
    head, x = random_head(8, 5, seed=2)
    weight = torch.stack([head.weight, 2 * head.weight])
    bias = torch.stack([head.bias, -head.bias])
    out = diag_ggn(x, weight, bias)
    assert out.shape == (2, 8 * 5 + 5)
    second = torch.nn.Linear(8, 5).double()
    with torch.no_grad():
        second.weight.copy_(weight[1])
        second.bias.copy_(bias[1])
    assert torch.allclose(out[1], closed_form(x, second), rtol=1e-12)
    # eps -> 0: sum over the bias entries of one item is (K - 1) / ||h||²
    one = x[:1]
    h_norm = head(one).norm().item()
    assert closed_form(one, head)[-5:].sum().item() == pytest.approx(4 / h_norm ** 2, rel=1e-5)


# ---------------------------------------------------------------- posterior
def test_posterior_scale_fixture():
    sigma = posterior_scale(torch.full((3,), 1e4, dtype=torch.float64))
    assert sigma.tolist() == pytest.approx([0.0099994999375] * 3, abs=1e-13)
    assert posterior_scale(t([-5.0])).item() == pytest.approx(1 / (1 + 1e-6))  # relu(H)


def test_hessian_update_with_zero_curvature_decays():
    head = LaplaceHashHead(4, 3, 10000).double()
    assert head.hessian.shape == (4 * 3 + 3,) and torch.all(head.hessian == 10000)
    head.update_hessian(torch.zeros(15, dtype=torch.float64), 0.999)
    assert torch.all(head.hessian == 0.999 * 10000)
    head.update_hessian(-torch.ones(15, dtype=torch.float64), 1.0)  # negative curvature is clipped
    assert torch.all(head.hessian == 0.999 * 10000)
    assert "hessian" in head.state_dict()


def test_zero_sigma_samples_equal_the_mean():
    torch.manual_seed(0)
    head = LaplaceHashHead(6, 4, float("inf")).double()
    weight, bias = head.sample_weights(3)
    assert torch.equal(weight, head.fc.weight.expand(3, -1, -1)) and torch.equal(bias, head.fc.bias.expand(3, -1))
    x = torch.randn(7, 6, dtype=torch.float64)
    codes = LaplaceHashHead.sampled_forward(x, weight, bias).mean(0)
    assert torch.equal(codes.sign(), torch.nn.functional.normalize(head.fc(x)).sign())


def test_sample_mean_and_std_match_posterior():
    torch.manual_seed(0)
    head = LaplaceHashHead(3, 2, 99.0).double()
    weight, bias = head.sample_weights(20000)
    assert torch.allclose(weight.mean(0), head.fc.weight, atol=4e-3)
    assert torch.allclose(bias.std(0), torch.full((2,), 1 / (10 + 1e-6), dtype=torch.float64), rtol=3e-2)


def test_gradient_on_mean_equals_gradient_at_sample():
    torch.manual_seed(0)
    head = LaplaceHashHead(6, 4, 50.0).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    labels = t([[1, 0], [1, 1], [0, 1], [1, 0], [0, 0]])
    weight, bias = head.sample_weights(1)
    z = head.sampled_forward(x, weight, bias)
    similarity_losses(z, z, affinity(labels)).sum().backward()
    w_s, b_s = weight.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    z_s = head.sampled_forward(x, w_s, b_s)
    similarity_losses(z_s, z_s, affinity(labels)).sum().backward()
    assert torch.allclose(head.fc.weight.grad, w_s.grad[0]) and torch.allclose(head.fc.bias.grad, b_s.grad[0])
    assert not torch.equal(w_s.detach(), head.fc.weight.detach()[None])  # really evaluated away from μ


# ---------------------------------------------------------------- loss
LABELS = [[1, 0, 0], [1, 1, 0], [0, 1, 1]]


def test_affinity_fixture():
    a = affinity(torch.tensor(LABELS, dtype=torch.float32))
    expected = [[0.4621172, 0.4621172, 0], [0.4621172, 0.7615941, 0.4621172], [0, 0.4621172, 0.7615941]]
    assert a.tolist() == [pytest.approx(row, abs=1e-7) for row in expected]
    assert torch.equal(a, a.T)
    assert affinity(t([[1, 1, 1, 0]])).item() == pytest.approx(math.tanh(1.5)) == pytest.approx(0.9051483, abs=1e-7)


def test_loss_fixture():
    z_i = torch.tensor([[[1, 0], [0.6, 0.8], [0, 1]]])
    z_t = torch.tensor([[[0.8, 0.6], [0, 1], [-0.6, 0.8]]])
    losses = similarity_losses(z_i, z_t, affinity(torch.tensor(LABELS, dtype=torch.float32)))
    assert losses.item() == pytest.approx(0.32885891, abs=1e-6)
    five = torch.cat([torch.full((4,), 9.0), losses])
    assert reduce_samples(five, "last_over_S").item() == pytest.approx(0.06577178, abs=1e-6)
    assert reduce_samples(five, "mean").item() == pytest.approx((36 + 0.32885891) / 5, abs=1e-6)


def test_l2_normalise_is_unit_and_matches_reference_layer():
    h = t([[3, 4], [0.1, -0.2]])
    assert torch.allclose(l2_normalise(h), reference_l2(h) / reference_l2(h).norm(dim=1, keepdim=True))
    assert torch.allclose(l2_normalise(h).norm(dim=1), torch.ones(2, dtype=torch.float64))


# ---------------------------------------------------------------- triplet count
def brute_force_triplets(labels):
    m = label_overlap(labels).long()
    matches, diffs = m != 0, m != 1
    return int((matches[:, :, None] & diffs[:, None, :]).sum())


def test_triplet_count_fixtures():
    assert count_triplets(t(LABELS)).item() == 9
    assert count_triplets(t([[1, 1], [1, 1], [1, 0]])).item() == 12
    torch.manual_seed(0)
    labels = (torch.rand(30, 6) < 0.3).double()
    assert count_triplets(labels).item() == brute_force_triplets(labels)
    assert hessian_scale(9, 10000, 5000) == pytest.approx(1e8 / 9)


# ---------------------------------------------------------------- trainer hooks (stub backbone, no data)
def stub_trainer(**overrides):
    from train.DPBE.trainer import Trainer

    backbone = StubBackbone(embed_dim=6, image_dim=4, text_dim=3)
    return build_trainer(Trainer, num_classes=2, num_train=100, backbone=backbone, output_dim=5, **overrides)


def stub_batch(labels):
    return {"image": torch.randn(len(labels), 4), "text": torch.randn(len(labels), 3), "label": torch.tensor(labels)}


def test_training_step_updates_precision_and_trains_the_mean():
    trainer = stub_trainer()
    labels = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]
    before = trainer.model.image_head.hessian.clone()
    out = trainer.training_step(stub_batch(labels))
    out["loss"].backward()
    assert trainer.model.image_head.fc.weight.grad is not None and trainer.model.backbone.image.weight.grad is not None
    n = count_triplets(torch.tensor(labels)).item()
    assert torch.all(trainer.model.image_head.hessian > 0.999 * before)  # curvature was added
    assert hessian_scale(n, 100, 5000) == 1e4 / n


def test_batch_without_triplets_only_decays_precision():
    trainer = stub_trainer()
    trainer.training_step(stub_batch([[1.0, 0.0]] * 3))  # every pair shares exactly one label: no negatives
    assert torch.allclose(trainer.model.text_head.hessian, torch.full((35,), 99.9))


def test_evaluation_samples_drawn_once_and_never_touch_the_weights():
    trainer = stub_trainer()
    trainer.model.eval()
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batch = stub_batch([[1.0, 0.0]] * 6)
    trainer.on_evaluation_start()
    weights = trainer._eval_weights
    first = trainer.encode(batch)["5"]
    again = trainer.encode(batch)["5"]  # same evaluation: same samples
    trainer.on_evaluation_end()
    assert all(torch.equal(first[i], again[i]) for i in range(2))
    assert set(first[0].unique().tolist()) <= {-1.0, 1.0} and first[0].shape == (6, 5)
    assert all(torch.equal(v, state[k]) for k, v in trainer.model.state_dict().items())
    with torch.no_grad():
        features = trainer.model.backbone.encode_image(batch["image"])
        expected = LaplaceHashHead.sampled_forward(features, *weights[0]).mean(0)
    assert weights[0][0].shape == (5, 5, 6) and torch.equal(first[0], torch.where(expected >= 0, 1.0, -1.0))
    trainer.on_evaluation_start()  # the same step: the same samples (every process draws them alike)
    assert torch.equal(trainer._eval_weights[0][0], weights[0][0])
    trainer.global_step += 10  # a later evaluation draws new samples
    trainer.on_evaluation_start()
    assert not torch.equal(trainer._eval_weights[0][0], weights[0][0])
