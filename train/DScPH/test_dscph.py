"""DScPH fixtures (README: Fixtures), the rotation, AdaTriplet-AM against brute force, optimizer wiring."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from train.common import label_similarity
from train.DScPH.adatriplet import AutoMarginTriplet, label_masks, triplet_statistics
from train.DScPH.loss import DScPHLoss, bit_variance_loss, cpf_loss
from train.DScPH.rotation import HouseholderRotation
from train.DScPH.trainer import Trainer
from train.testing import build_trainer


def t(values):
    return torch.tensor(values, dtype=torch.float64)


W = [[1, 0, 0], [0, 1, 0], [0.7, 0.7, 0.1]]
Y = [[1, 0, 0], [0, 1, 0]]
H_I, H_T = [[0.9, 0.1, 0], [0.5, 0.5, 0.1]], [[0.8, 0.3, 0.1], [0.1, 0.9, 0]]
H_I_NEG, H_T_NEG = [[0.7, 0.7, 0.12], [0.1, 0.95, 0]], [[0.6, 0.75, 0.1], [0, 1, 0]]


def criterion(tau=0.9, psi=0.7, proxies=W, **kwargs):
    loss = DScPHLoss(len(proxies), len(proxies[0]), tau, psi, train_rotation=False, **kwargs).double()
    with torch.no_grad():
        loss.cpf.proxies.copy_(t(proxies))
    return loss


# ------------------------------------------------------------------ CPF and total (fixtures)
@pytest.mark.parametrize("tau, psi, expected", [(0.9, 0.7, 0.166197), (0.3, 0.3, 0.394528)])
def test_cpf_fixture(tau, psi, expected):
    total = cpf_loss(t(H_I), t(W), t(Y), tau, psi) + cpf_loss(t(H_T), t(W), t(Y), tau, psi)
    assert total.item() == pytest.approx(expected, abs=1e-6)


def test_unified_total_fixture_with_rotation_at_init():
    out = criterion()(t(H_I), t(H_T), t(Y))
    assert out["cpf"].item() == pytest.approx(0.166197, abs=1e-6)
    assert out["quant_image"].item() == pytest.approx(0.231432, abs=1e-6)
    assert out["quant_text"].item() == pytest.approx(0.231832, abs=1e-6)
    assert out["loss"].item() == pytest.approx(0.629461, abs=1e-6)


def test_active_negative_fixture():
    cos = F.normalize(t(H_I_NEG), dim=1) @ F.normalize(t(W), dim=1).T
    assert cos[0, 2].item() == pytest.approx(0.999801, abs=1e-6) and cos[0, 2] > 0.9  # class-0 sample, class 2
    assert cpf_loss(t(H_I_NEG), t(W), t(Y), 0.9, 0.7).item() == pytest.approx(0.121279, abs=1e-6)
    assert cpf_loss(t(H_T_NEG), t(W), t(Y), 0.9, 0.7).item() == pytest.approx(0.148060, abs=1e-6)
    out = criterion()(t(H_I_NEG), t(H_T_NEG), t(Y))
    assert out["cpf"].item() == pytest.approx(0.269339, abs=1e-6)
    assert out["quant_image"].item() == pytest.approx(0.231443, abs=1e-6)
    assert out["quant_text"].item() == pytest.approx(0.231512, abs=1e-6)
    assert out["loss"].item() == pytest.approx(0.732294, abs=1e-6)


def test_negative_term_changes_the_value():
    with_neg = cpf_loss(t(H_I_NEG), t(W), t(Y), 0.9, 0.7)
    without = cpf_loss(t(H_I_NEG), t(W), t(Y), 1.0, 0.7)  # τ = 1: no negative cosine is above it
    assert with_neg.item() > without.item() + 1e-3


def test_perfect_alignment_gives_zero():
    proxies = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    codes = t([[2, 0, 0], [0, 0.5, 0], [0, 0, 3]])
    assert cpf_loss(codes, t(proxies), torch.eye(3, dtype=torch.float64), 0.9, 0.7).item() == 0.0


def test_invariant_to_positive_rescaling_and_in_unit_interval():
    base = cpf_loss(t(H_I_NEG), t(W), t(Y), 0.9, 0.7)
    scaled = cpf_loss(3 * t(H_I_NEG), 0.2 * t(W) * t([[1], [4], [2]]), t(Y), 0.9, 0.7)
    assert scaled.item() == pytest.approx(base.item(), abs=1e-12)
    gen = torch.Generator().manual_seed(0)
    for tau, psi in ((0.9, 0.7), (0.3, 0.3), (0.0, -0.5)):
        codes, proxies = torch.randn(32, 8, generator=gen), torch.randn(5, 8, generator=gen)
        labels = (torch.rand(32, 5, generator=gen) < 0.3).float()
        value = cpf_loss(codes, proxies, labels, tau, psi).item()
        assert 0.0 <= value < 1.0


def test_penalty_weights_are_not_differentiated():
    codes = t(H_I_NEG).requires_grad_()
    cpf_loss(codes, t(W), t(Y), 0.9, 0.7).backward()
    detached = codes.detach().clone().requires_grad_()
    cos = F.normalize(detached, dim=1) @ F.normalize(t(W), dim=1).T
    y = t(Y)
    with torch.no_grad():
        wp, wn = torch.exp(1.3 * (1 - cos)), torch.exp(1.3 * (cos - 1.0))
    reward = 2 * (y * cos.clamp(min=0)).sum() + 2
    push = torch.where(cos > 0.9, (1 - y) * (cos - 0.7) * wn, torch.zeros_like(cos)).sum()
    (1 - reward / (reward + (y * (1 - cos) * wp).sum() + push)).backward()
    assert torch.allclose(codes.grad, detached.grad, atol=1e-12)


# ------------------------------------------------------------------ bit variance
@pytest.mark.parametrize("bits, balanced, one_hot", [(16, 0.246134, 0.246663), (32, 0.248057, 0.248332),
                                                     (64, 0.249026, 0.249166)])
def test_bit_variance_balanced_vs_one_hot(bits, balanced, one_hot):
    one = torch.zeros(1, bits, dtype=torch.float64)
    one[0, 0] = 1
    assert bit_variance_loss(torch.full((1, bits), bits ** -0.5, dtype=torch.float64)).item() == pytest.approx(
        balanced, abs=1e-6)
    assert bit_variance_loss(one).item() == pytest.approx(one_hot, abs=1e-6)


def test_bit_variance_zero_and_symmetry():
    assert bit_variance_loss(torch.zeros(3, 16)).item() == 0.25
    z = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    assert bit_variance_loss(-z).item() == pytest.approx(bit_variance_loss(z).item(), abs=1e-7)


# ------------------------------------------------------------------ Householder rotation
@pytest.mark.parametrize("bits", [16, 32, 64, 24])
def test_rotation_at_init_is_minus_identity(bits):
    x = torch.randn(5, bits, generator=torch.Generator().manual_seed(bits), dtype=torch.float64)
    assert torch.allclose(HouseholderRotation(bits).double()(x), -x, atol=1e-12)


def explicit_product(weight):
    """H_1 H_2 ... H_K with H_i = I - 2 v_i v_iᵀ, v_i the normalised column i."""
    dim = len(weight)
    product = torch.eye(dim, dtype=weight.dtype)
    for i in range(dim):
        v = weight[:, i:i + 1] / weight[:, i].norm()
        product = product @ (torch.eye(dim, dtype=weight.dtype) - 2 * v @ v.T)
    return product


@pytest.mark.parametrize("bits", [5, 8])
def test_rotation_equals_explicit_householder_product(bits):
    rotation = HouseholderRotation(bits).double()
    with torch.no_grad():
        rotation.weight.copy_(torch.randn(bits, bits, generator=torch.Generator().manual_seed(bits)))
    matrix = rotation.matrix()
    assert torch.allclose(matrix, explicit_product(rotation.weight.detach()), atol=1e-13)
    assert torch.allclose(matrix.T @ matrix, torch.eye(bits, dtype=torch.float64), atol=1e-13)
    x = torch.randn(7, bits, dtype=torch.float64)
    assert torch.allclose(rotation(x), x @ matrix.T) and torch.allclose(rotation(x).norm(dim=1), x.norm(dim=1))


def test_rotation_does_not_change_unified_quantisation():
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    assert bit_variance_loss(F.normalize(HouseholderRotation(16)(z), dim=1)).item() == pytest.approx(
        bit_variance_loss(F.normalize(z, dim=1)).item(), abs=1e-7)


# ------------------------------------------------------------------ AdaTriplet-AM vs brute force
def brute_force(codes, labels, margin, beta):
    """The reference's enumeration: every triplet, semi-hard selection, unique negative pairs."""
    s = label_similarity(labels)
    cos = F.normalize(codes, dim=1) @ F.normalize(codes, dim=1).T
    n = len(codes)
    gaps, losses, pairs = [], [], set()
    for a, p, q in itertools.product(range(n), repeat=3):
        if s[a, p] and a != p and not s[a, q]:
            gap = cos[a, p] - cos[a, q]
            gaps.append(gap)
            pairs.add((min(a, q), max(a, q)))
            if 0 < gap <= margin and margin - gap > 0:
                losses.append(margin - gap)
    triplet = torch.stack(losses).mean() if losses else codes.new_zeros(())
    chosen = [(a, q) for a, q in sorted(pairs) if cos[a, q] >= beta]
    lower = (torch.stack([F.relu(codes[a] @ codes[q] - beta) for a, q in chosen]).mean() if chosen
             else codes.new_zeros(()))
    gap_mean = float(torch.stack(gaps).detach().mean()) if gaps else None
    pair_mean = float(torch.stack([cos[a, q] for a, q in sorted(pairs)]).detach().mean()) if pairs else None
    return triplet + lower, gap_mean, pair_mean


def random_batch(seed, n=9, classes=4, zero_row=True):
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, classes, generator=gen) < 0.35).double()
    if zero_row:
        labels[0] = 0
    return torch.randn(n, 6, generator=gen, dtype=torch.float64), labels


@pytest.mark.parametrize("seed, margin, beta", [(0, 0.25, 0.0), (1, 0.6, -0.2), (2, 0.1, 0.3), (3, 2.5, -1.0)])
def test_adatriplet_matches_brute_force(seed, margin, beta):
    codes, labels = random_batch(seed)
    ada = AutoMarginTriplet(margin, beta)
    expected, gap_mean, pair_mean = brute_force(codes, labels, margin, beta)
    a = codes.clone().requires_grad_()
    b = codes.clone().requires_grad_()
    got = ada(a, labels)
    assert got.item() == pytest.approx(expected.item(), abs=1e-10)
    got.backward()
    brute_force(b, labels, margin, beta)[0].backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-10)
    unit = F.normalize(codes, dim=1)
    stats = triplet_statistics(unit @ unit.T, *label_masks(labels))
    assert stats == pytest.approx((gap_mean, pair_mean), abs=1e-12)


def test_adatriplet_without_triplets_is_zero():
    codes = torch.randn(4, 6, dtype=torch.float64)
    ada = AutoMarginTriplet()
    assert ada(codes, torch.ones(4, 3, dtype=torch.float64)).item() == 0.0  # no negatives
    assert ada(codes, torch.eye(4, dtype=torch.float64)).item() == 0.0  # no positives
    assert triplet_statistics(codes @ codes.T, *label_masks(torch.eye(4))) == (None, None)


def test_adatriplet_estimate_between_modalities_of_the_first_batch():
    codes, labels = random_batch(4, zero_row=False)
    text = codes + 0.3 * torch.randn(codes.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    _, gap_mean, pair_mean = brute_force(codes, labels, 0.25, 0.0)
    ada = AutoMarginTriplet(0.25, 0.0)
    loss = criterion(proxies=[[1.0] * 6] * 4, adatriplet=ada)
    out = loss(codes, text, labels, estimate_margins=True)
    assert out["triplet_image"].item() == pytest.approx(brute_force(codes, labels, 0.25, 0.0)[0].item(), abs=1e-10)
    margin, beta = max(0.0, gap_mean / 2), 1 - (1 - pair_mean) / 2
    assert (ada.margin, ada.beta) == pytest.approx((margin, beta), abs=1e-12)
    assert out["triplet_text"].item() == pytest.approx(brute_force(text, labels, margin, beta)[0].item(), abs=1e-10)
    loss(codes, text, labels)  # later batches keep the epoch's estimate
    assert (ada.margin, ada.beta) == pytest.approx((margin, beta), abs=1e-12)
    ada.reset()
    assert (ada.margin, ada.beta) == (0.25, 0.0)


# ------------------------------------------------------------------ optimizer wiring
def fake_trainer(**options):
    """A Trainer built on the shared stub backbone: enough for param_groups and the optimizers."""
    return build_trainer(Trainer, num_classes=2, output_dim=4, epochs=1, **options)


def train_steps(trainer, steps=3):
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(8, 12, generator=gen), "text": torch.randn(8, 6, generator=gen),
             "label": (torch.rand(8, 2, generator=gen) < 0.5).float()}
    for _ in range(steps):
        trainer.zero_grad()
        trainer.training_step(batch)["loss"].backward()
        for optimizer in trainer.optimizers:
            optimizer.step()


@pytest.mark.parametrize("train_rotation", [False, True])
def test_rotation_trained_only_when_asked(train_rotation):
    trainer = fake_trainer(train_rotation=train_rotation)
    proxies, rotation = trainer.criterion.cpf.proxies.detach().clone(), trainer.criterion.rotation.weight.detach().clone()
    train_steps(trainer)
    assert not torch.equal(trainer.criterion.cpf.proxies, proxies)
    assert torch.equal(trainer.criterion.rotation.weight, rotation) != train_rotation


def test_proxy_optimizer_choice():
    unified = fake_trainer()
    assert len(unified.optimizers) == 1
    assert unified.optimizers[0].param_groups[-1]["params"] == [unified.criterion.cpf.proxies]
    original = fake_trainer(proxy_optimizer="adam", proxy_lr=1e-5)
    assert len(original.optimizers) == 2 and isinstance(original.optimizers[1], torch.optim.Adam)
    assert all(p is not original.criterion.cpf.proxies for g in original.optimizers[0].param_groups for p in g["params"])
    assert original.optimizers[1].param_groups[0]["lr"] == 1e-5
