"""DUaPH fixtures (README: Fixtures): MS loss, uncertainty term, uncertainty module, heads, codes, optimizer."""
import math
from types import SimpleNamespace

import pytest
import torch

from model.clip import build_tiny_clip
from train.common import label_similarity
from train.DUaPH.loss import multi_similarity_loss, uncertainty_loss
from train.DUaPH.model import DUaPHModel, UncertaintyModule
from train.DUaPH.trainer import DUaPHConfig, Trainer
from utils.distributed import DistContext
from utils.optim import schedule_factor


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def ms(a, b, labels):
    return multi_similarity_loss(t(a), t(b), t(labels)).item()


def test_ms_hand_example():
    a, y = [[1, 0.2], [0.9, 0.5], [0.8, 0.6]], [[1, 0], [1, 1], [0, 1]]
    assert ms(a, a, y) == pytest.approx(0.478223, abs=1e-6)
    assert ms(a, a, y) * 3 == pytest.approx(0.715093 + 0.719575, abs=3e-6)  # anchor 1 has no negative


H = [[.9, -.8, .7], [.85, -.6, .9], [-.7, .8, .6], [.6, .7, -.9]]
T = [[.8, -.9, .5], [.7, -.7, .8], [-.6, .9, .7], [.5, .6, -.8]]
Y = [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_ms_four_terms():
    values = [ms(H, H, Y), ms(T, T, Y), ms(H, T, Y), ms(T, H, Y)]
    assert values == pytest.approx([0.272904, 0.267133, 0.269068, 0.266729], abs=1e-6)
    assert sum(values) == pytest.approx(1.075833, abs=1e-6)


def test_ms_invariant_to_positive_scaling():
    scaled_h, scaled_t = [[2 * v for v in row] for row in H], [[0.5 * v for v in row] for row in T]
    assert ms(scaled_h, scaled_t, Y) == pytest.approx(ms(H, T, Y), abs=1e-12)
    assert ms(scaled_h, scaled_h, Y) == pytest.approx(ms(H, H, Y), abs=1e-12)


def reference_ms(a, b, labels):
    """The reference's per-anchor loop (kept here only to check the vectorised form)."""
    sim = torch.nn.functional.normalize(a @ b.T)
    related = label_similarity(labels)
    losses = []
    for i in range(len(a)):
        pos = sim[i][related[i]]
        pos = pos[pos < 1 - 1e-5]
        neg = sim[i][~related[i]]
        if pos.numel() == 0 or neg.numel() == 0:
            continue
        neg_kept, pos_kept = neg[neg + 0.1 > pos.min()], pos[pos - 0.1 < neg.max()]
        if len(neg_kept) < 1 or len(pos_kept) < 1:
            continue
        losses.append(0.5 * torch.log(1 + torch.exp(-2.0 * (pos_kept - 0.1)).sum())
                      + 0.025 * torch.log(1 + torch.exp(40.0 * (neg_kept - 0.1)).sum()))
    return sum(losses) / len(a) if losses else torch.zeros(())


def test_ms_matches_per_anchor_loop_with_gradients():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(24, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(24, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = (torch.rand(24, 5, generator=gen) < 0.3).double()
    ours = multi_similarity_loss(a, b, labels)
    ref = reference_ms(a, b, labels)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-12)
    grads = torch.autograd.grad(ours, (a, b))
    ref_grads = torch.autograd.grad(ref, (a, b))
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-12)


def test_ms_zero_without_positive_and_negative():
    a = t([[1, 0], [0, 1], [1, 1]])
    assert multi_similarity_loss(a, a, t([[1, 0], [1, 0], [1, 0]])).item() == 0.0  # no negatives
    assert multi_similarity_loss(a, a, t([[0, 0], [0, 0], [0, 0]])).item() == 0.0  # no positives
    # the self-pair stays a positive (row-normalised S_ii < 1 - 1e-5): distinct classes still give a loss
    assert multi_similarity_loss(a, a, t([[1, 0, 0], [0, 1, 0], [0, 0, 1]])).item() > 0


MU_I, MU_T = [[0.5, -1], [1.5, 0]], [[0, -0.5], [1, 1]]
VAR_I, VAR_T = [[0.1, 0.2], [0.3, 0.4]], [[0.2, 0.1], [0.5, 0.1]]


def reference_broadcast(mu_i, var_i, mu_t, var_t):
    """The reference's literal B×B×K computation (the large intermediate the closed form avoids)."""
    distance = torch.norm(mu_i - mu_t, p=2, dim=1) ** 2
    loss_1 = (distance.unsqueeze(-1) ** 2) / (var_i + var_t).unsqueeze(1)
    return (loss_1 + torch.log(var_i + var_i + 1)).mean()


def test_uncertainty_reference_fixture():
    value = uncertainty_loss(t(MU_I), t(VAR_I), t(MU_T), t(VAR_T)).item()
    assert value == pytest.approx(2.640891, abs=1e-6)
    assert value == pytest.approx(reference_broadcast(t(MU_I), t(VAR_I), t(MU_T), t(VAR_T)).item(), abs=1e-12)
    tripled = uncertainty_loss(t(MU_I), t(VAR_I), t(MU_T), 3 * t(VAR_T)).item()
    assert tripled == pytest.approx(1.620461, abs=1e-6)


def test_uncertainty_pfe_fixture():
    value = uncertainty_loss(t(MU_I), t(VAR_I), t(MU_T), t(VAR_T), mode="pfe").item()
    assert value == pytest.approx(0.163733, abs=1e-6)
    var = t(VAR_I) + t(VAR_T)
    by_hand = 0.5 * ((t(MU_I) - t(MU_T)) ** 2 / var + var.log()).sum() / 2
    assert value == pytest.approx(by_hand.item(), abs=1e-12)


def test_uncertainty_closed_form_equals_broadcast_on_random_batch():
    gen = torch.Generator().manual_seed(1)
    mu_i, mu_t = torch.randn(2, 16, 8, generator=gen, dtype=torch.float64)
    var_i, var_t = torch.rand(2, 16, 8, generator=gen, dtype=torch.float64) + 1e-3
    closed = uncertainty_loss(mu_i, var_i, mu_t, var_t)
    assert closed.item() == pytest.approx(reference_broadcast(mu_i, var_i, mu_t, var_t).item(), rel=1e-12)
    # the log term ignores the text variance: only the first part changes with σ²_T
    first = (mu_i - mu_t).square().sum(1).square().mean() * (var_i + 2 * var_t).reciprocal().mean()
    assert uncertainty_loss(mu_i, var_i, mu_t, 2 * var_t).item() == pytest.approx(
        (first + torch.log(2 * var_i + 1).mean()).item(), rel=1e-12)


def test_uncertainty_module_at_init():
    module = UncertaintyModule(16)
    mu, var = module(torch.tanh(torch.randn(32, 16)))
    assert mu.shape == var.shape == (32, 16)
    low, high = 1e-6 + math.exp(-7.01), 1e-6 + math.exp(-6.99)
    assert (var >= low).all() and (var <= high).all() and (var > 1e-6).all()
    assert module.gamma.item() == pytest.approx(1e-4) and module.beta.item() == -7.0
    assert module.bn_mu.eps == module.bn_sigma.eps == 1e-3 and module.bn_sigma.weight is None


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DUaPHModel(build_tiny_clip(), 16)


def test_hash_head_init(model):
    for head in (model.image_head, model.text_head):
        assert head.fc.weight.abs().max().item() <= math.sqrt(6 / 16)
        assert (head.fc.bias == 0).all() and head.dropout.p == 0.2
    out = model.text_head(torch.randn(8, model.backbone.embed_dim) * 100)
    assert (out.abs() <= 1).all()


def test_codes_binary_deterministic_and_independent_of_uncertainty(model):
    trainer = SimpleNamespace(model=model, primary_code_set="16")
    images, texts = torch.randn(2, 3, 64, 64), torch.randint(1, 400, (2, 32))
    batch = {"image": images, "text": texts}
    model.eval()
    first = Trainer.encode(trainer, batch)["16"]
    with torch.no_grad():
        model.uncertainty_image.beta.fill_(3.0)
        model.uncertainty_text.fc_mu.weight.mul_(-5)
    second = Trainer.encode(trainer, batch)["16"]
    for a, b in zip(first, second):
        assert torch.equal(a, b) and set(a.unique().tolist()) <= {-1.0, 1.0}


def test_optimizer_groups_and_schedule(model):
    cfg = DUaPHConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.output_dim, cfg.lr, cfg.clip_lr, cfg.mls_mode) == (
        100, 128, 32, 1e-3, 1e-5, "reference")
    groups = Trainer.param_groups(SimpleNamespace(model=model, cfg=cfg))
    assert [g["lr"] for g in groups] == [1e-5, 1e-3, 1e-3, 1e-3, 1e-3]
    covered = [id(p) for g in groups for p in g["params"]]
    assert sorted(covered) == sorted(id(p) for p in model.parameters())
    assert schedule_factor(0, 1000, 0.1) == 0.0
    assert schedule_factor(99, 1000, 0.1) == pytest.approx(0.99)
    assert schedule_factor(100, 1000, 0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert schedule_factor(1000, 1000, 0.1) == pytest.approx(0.0, abs=1e-12)


def _step(model, **options):
    cfg = DUaPHConfig(**options)
    torch.manual_seed(1)
    labels = (torch.rand(8, 4) < 0.4).float()
    batch = {"image": torch.randn(8, 3, 64, 64), "text": torch.randint(1, 400, (8, 16)), "label": labels}
    model.zero_grad()
    stub = SimpleNamespace(model=model, cfg=cfg, dist=DistContext(0, 1, torch.device("cpu")),
                           global_batch=lambda *rows: rows)
    out = Trainer.training_step(stub, batch)
    out["loss"].backward()
    return out


def test_threshold_option_and_weight_zero_turns_the_uncertainty_term_off(model):
    model.train()
    full = _step(model)
    assert full["loss"].item() == pytest.approx(full["ms"].item() + full["uncertainty"].item(), rel=1e-5)
    assert model.uncertainty_image.fc_mu.weight.grad.abs().sum() > 0
    off = _step(model, mls_weight=0.0, ms_threshold=0.5)
    assert off["loss"].item() == off["ms"].item() != full["ms"].item()  # λ changed the MS term
    assert all(p.grad is None or not p.grad.any() for p in model.uncertainty_image.parameters())
    model.eval()


def test_demo_defaults():
    demo = DUaPHConfig.defaults_for("demo")
    assert (demo["head_init"], demo["ms_threshold"], demo["mls_weight"], demo["epochs"]) == ("default", 0.5, 0.0, 25)
    assert DUaPHConfig.defaults_for("coco").get("mls_weight", 1.0) == 1.0
