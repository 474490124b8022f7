"""DAGtH fixtures (README: Fixtures), the sorted-window AdaTriplet against explicit triplet enumeration,
the Householder rotation, the bit-variance loss, decoupling and encoding."""
import math

import pytest
import torch
import torch.nn.functional as F

from train.common import label_overlap
from train.DAGtH import Trainer
from train.DAGtH.rotation import HouseholderRotation, bit_variance, fit_rotation, quantization_loss
from train.DAGtH.trainer import DAGtHCriterion
from train.DAGtH.triplet import AdaptiveTriplet, label_masks
from train.testing import build_trainer
from utils.optim import BertAdam

X4 = [[1, 0], [0.6, 0.8], [0.8, 0.6], [0, 1]]
Y4 = [[1, 0], [1, 0], [0, 1], [0, 1]]
H_I = [[0.9, 0.1, -0.3], [0.7, 0.5, 0.2], [-0.2, 0.8, 0.4]]
H_T = [[0.8, -0.1, 0.1], [0.2, 0.9, -0.5], [-0.6, 0.3, 0.9]]
Y3 = [[1, 0], [1, 1], [0, 1]]


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def single(x, labels, **kwargs):
    """AdaTriplet on one set of embeddings (the reference `AdaTripletLoss(x, labels)`)."""
    z = F.normalize(x, dim=1)
    return AdaptiveTriplet(**kwargs).to(x.dtype)(z @ z.T, *label_masks(labels, labels, True), symmetric=True)


def enumerated(sim, positive, negative, symmetric, mining="all", use_an=False, k_delta=2.0, k_an=2.0):
    """The reference algorithm: enumerate every triplet (n³ mask) and every unique AN pair."""
    a, p, n = torch.where(positive[:, :, None] & negative[:, None, :])
    delta = (sim[a, p] - sim[a, n]).detach()
    epsilon = (delta.mean() / k_delta).clamp(0, 0.5)
    keep = delta <= epsilon
    if mining == "hard":
        keep &= delta <= 0
    elif mining == "semi-hard":
        keep &= delta > 0
    loss = F.relu(sim[a, n] - sim[a, p] + epsilon)[keep].mean() if keep.any() else sim.new_zeros(())
    if use_an:
        pairs = sorted({(min(i, j), max(i, j)) if symmetric else (i, j) for i, j in zip(a.tolist(), n.tolist())})
        rows, cols = torch.tensor([q[0] for q in pairs]), torch.tensor([q[1] for q in pairs])
        values = sim[rows, cols]
        beta = 1 + (values.detach().mean() - 1) / k_an
        kept = values.detach() >= beta
        loss = loss + (F.relu(values[kept] - beta).mean() if kept.any() else 0)
    return loss, epsilon, int(keep.sum())


# --------------------------------------------------------------------------------------------- triplets
def test_triplet_enumeration():
    positive, negative = label_masks(t([[1, 0], [1, 0], [0, 1]]), t([[1, 0], [1, 0], [0, 1]]), True)
    triplets = torch.stack(torch.where(positive[:, :, None] & negative[:, None, :]), dim=1).tolist()
    assert triplets == [[0, 1, 2], [1, 0, 2]]
    assert single(t([[1, 0], [0, 1], [1, 1]]), t([[1, 0], [1, 0], [0, 1]]))["triplets"].item() == 2


def test_four_sample_fixture():
    out = single(t(X4), t(Y4))
    assert out["epsilon"].item() == 0.0  # mean Δ −0.04 → clip(−0.02, 0, 0.5)
    assert out["triplets"].item() == 8 and out["mined"].item() == 6
    assert out["loss"].item() == pytest.approx(0.2533333, abs=1e-6)
    with_an = single(t(X4), t(Y4), use_an=True)
    assert with_an["beta"].item() == pytest.approx(0.82, abs=1e-6)
    assert with_an["an"].item() == pytest.approx(0.14, abs=1e-6)
    assert with_an["loss"].item() == pytest.approx(0.3933333, abs=1e-6)


def test_joint_batch_fixture():
    criterion = DAGtHCriterion(Trainer.Config(output_dim=3))
    out = criterion(t(H_I), t(H_T), t(Y3))
    assert out["triplets"].item() == 24 and out["mined"].item() == 3
    assert out["epsilon"].item() == pytest.approx(0.4489135, abs=1e-6)
    assert out["loss"].item() == pytest.approx(0.1597118, abs=1e-6)
    assert criterion.terms["joint"].epsilon.item() == pytest.approx(0.4489135, abs=1e-6)


def test_epsilon_update_and_zero_loss_when_every_delta_exceeds_epsilon():
    torch.manual_seed(0)
    x, labels = torch.randn(8, 5, dtype=torch.float64), (torch.rand(8, 3) < 0.4).double()
    z = F.normalize(x, dim=1)
    positive, negative = label_masks(labels, labels, True)
    a, p, n = torch.where(positive[:, :, None] & negative[:, None, :])
    expected = ((z @ z.T)[a, p] - (z @ z.T)[a, n]).mean() / 2
    assert single(x, labels)["epsilon"].item() == pytest.approx(min(max(expected.item(), 0), 0.5), abs=1e-7)
    separated = single(t([[1, 0], [1, 0.01], [-1, 0], [-1, 0.01]]), t([[1, 0], [1, 0], [0, 1], [0, 1]]))
    assert separated["epsilon"].item() == 0.5 and separated["mined"].item() == 0 and separated["loss"].item() == 0


def test_loss_invariant_to_positive_row_scaling():
    scale = t([[2.0], [0.5], [3.0], [7.0]])
    assert single(t(X4) * scale, t(Y4))["loss"].item() == pytest.approx(0.2533333, abs=1e-6)


def test_unique_an_pairs_are_not_double_counted():
    # classes {0,1,2}, {3,4}, {5}: an AN pair occurs in 1 to 3 triplets, but counts once
    x = t([[1, 0], [0.6, 0.8], [0.8, 0.6], [0, 1], [0.3, 0.9], [-0.5, 0.5]])
    labels = t([[1, 0, 0]] * 3 + [[0, 1, 0]] * 2 + [[0, 0, 1]])
    z = F.normalize(x, dim=1)
    c = z @ z.T
    different = (label_overlap(labels) == 0).triu()
    unique_mean = c[different].mean().item()
    positive, negative = label_masks(labels, labels, True)
    a, _, n = torch.where(positive[:, :, None] & negative[:, None, :])
    assert abs(c[a, n].mean().item() - unique_mean) > 0.01  # per-triplet counting would give another β
    assert single(x, labels, use_an=True)["beta"].item() == pytest.approx(1 + (unique_mean - 1) / 2, abs=1e-6)


def test_empty_triplet_set_keeps_state():
    term = AdaptiveTriplet(epsilon=0.25, beta=0.1, use_an=True)
    z = F.normalize(t([[1, 0], [0, 1]]), dim=1)
    out = term(z @ z.T, *label_masks(t([[1, 0], [1, 0]]), t([[1, 0], [1, 0]]), True), symmetric=True)
    assert out["loss"].item() == 0 and not out["loss"].requires_grad
    assert term.epsilon.item() == 0.25 and term.beta.item() == pytest.approx(0.1)
    assert set(dict(term.named_buffers())) == {"epsilon", "beta"}


def test_fixed_margin_keeps_the_initial_values():
    # X4 with ε = 0.25 and β = 0 kept: the 6 triplets with Δ ≤ 0.25 give mean(0.25 − Δ) = 0.25 + 0.2533333
    term = AdaptiveTriplet(epsilon=0.25, beta=0.0, use_an=True, update="fixed")
    z = F.normalize(t(X4), dim=1)
    for _ in range(2):
        out = term(z @ z.T, *label_masks(t(Y4), t(Y4), True), symmetric=True)
        assert out["epsilon"].item() == 0.25 and out["beta"].item() == 0 and out["mined"].item() == 6
        assert out["triplet"].item() == pytest.approx(0.5033333, abs=1e-6)
        assert out["an"].item() == pytest.approx(0.64, abs=1e-6)  # unique AN cosines 0.8, 0, 0.96, 0.8, all ≥ β
    term.end_epoch()
    assert term.epsilon.item() == 0.25 and term.beta.item() == 0


def test_epoch_margin_uses_the_previous_epochs_statistics():
    x2 = t([[1, 0], [1, 0.1], [0, 1], [0.1, 1]])
    term = AdaptiveTriplet(epsilon=0.25, beta=0.0, use_an=True, update="epoch").double()
    masks = label_masks(t(Y4), t(Y4), True)
    deltas, an_values = [], []
    an_pairs = (t(Y4) @ t(Y4).T == 0).triu()
    for x in (t(X4), x2, t(X4)):
        z = F.normalize(x.double(), dim=1)
        sim = z @ z.T
        out = term(sim, *masks, symmetric=True)
        assert out["epsilon"].item() == 0.25 and out["beta"].item() == 0  # unchanged within the epoch
        a, p, n = torch.where(masks[0][:, :, None] & masks[1][:, None, :])
        deltas.append(sim[a, p] - sim[a, n])
        an_values.append(sim[an_pairs])
    term.eval()
    z = F.normalize(torch.randn(4, 2, dtype=torch.float64), dim=1)
    term(z @ z.T, *masks, symmetric=True)  # evaluation-mode calls are not counted
    term.end_epoch()
    mean_delta = torch.cat(deltas).mean().item()
    assert mean_delta > 0
    assert term.epsilon.item() == pytest.approx(min(mean_delta / 2, 0.5), abs=1e-12)
    assert term.beta.item() == pytest.approx(1 + (torch.cat(an_values).mean().item() - 1) / 2, abs=1e-12)
    term.train()
    term.end_epoch()  # an epoch without triplets keeps the values
    assert term.epsilon.item() == pytest.approx(min(mean_delta / 2, 0.5), abs=1e-12)


def test_trainer_ends_the_epoch_of_every_miner():
    trainer = stub_trainer(margin_update="epoch", triplet_mode="directional")
    trainer.model.train()
    Trainer.training_step(trainer, batch())
    assert all(term.epsilon.item() == 0.25 for term in trainer.criterion.terms.values())
    Trainer.on_epoch_end(trainer, 0)
    assert all(term.epsilon.item() != 0.25 for term in trainer.criterion.terms.values())


@pytest.mark.parametrize("mining", ["all", "hard", "semi-hard"])
@pytest.mark.parametrize("use_an", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_sorted_windows_equal_explicit_enumeration(mining, use_an, cross):
    generator = torch.Generator().manual_seed(hash((mining, use_an, cross)) % 1000)
    for _ in range(3):
        a = torch.randn(12, 6, generator=generator, dtype=torch.float64)
        b = torch.randn(12, 6, generator=generator, dtype=torch.float64) if cross else a
        labels = (torch.rand(12, 4, generator=generator) < 0.35).double()
        masks = label_masks(labels, labels, same_items=not cross)
        sims = []
        for _method in range(2):
            za = F.normalize(a.clone().requires_grad_(), dim=1)
            sims.append(za @ (F.normalize(b, dim=1) if cross else za).T)
        term = AdaptiveTriplet(use_an=use_an, mining=mining).double()
        ours = term(sims[0], *masks, symmetric=not cross)
        loss, epsilon, mined = enumerated(sims[1], *masks, symmetric=not cross, mining=mining, use_an=use_an)
        assert ours["loss"].item() == pytest.approx(loss.item(), abs=1e-12)
        assert ours["epsilon"].item() == pytest.approx(epsilon.item(), abs=1e-12)
        assert ours["mined"].item() == mined
        if loss.requires_grad:
            g1, = torch.autograd.grad(ours["loss"], sims[0], retain_graph=True)
            g2, = torch.autograd.grad(loss, sims[1])
            assert torch.allclose(g1, g2, atol=1e-12)


def test_directional_mode_sums_four_terms_with_own_state():
    criterion = DAGtHCriterion(Trainer.Config(output_dim=3, triplet_mode="directional"))
    out = criterion(t(H_I), t(H_T), t(Y3))
    parts = [out[f"{name}_loss"] for name in ("i2i", "t2t", "i2t", "t2i")]
    assert out["loss"].item() == pytest.approx(sum(p.item() for p in parts), abs=1e-7)
    epsilons = {name: term.epsilon.item() for name, term in criterion.terms.items()}
    assert len(epsilons) == 4 and len(set(epsilons.values())) > 1


# --------------------------------------------------------------------------------------------- rotation
def explicit_product(weight):
    v = weight / weight.norm(dim=0, keepdim=True)
    h = torch.eye(len(v), dtype=v.dtype)
    for i in range(len(v)):
        h = h @ (torch.eye(len(v), dtype=v.dtype) - 2 * torch.outer(v[:, i], v[:, i]))
    return h


def test_householder_fixture_and_init():
    rotation = HouseholderRotation(2)
    with torch.no_grad():
        rotation.weight.copy_(t([[1, 1], [0, 1]]))
    assert torch.allclose(rotation.matrix(), t([[0, 1], [-1, 0]]), atol=1e-6)
    assert torch.equal(HouseholderRotation(5).matrix(), -torch.eye(5))


@pytest.mark.parametrize("bits", [4, 6, 8, 64])
def test_householder_is_the_ordered_product_and_orthogonal(bits):
    rotation = HouseholderRotation(bits).double()
    with torch.no_grad():
        rotation.weight.copy_(torch.randn(bits, bits, generator=torch.Generator().manual_seed(bits),
                                          dtype=torch.float64))
    h = rotation.matrix()
    assert torch.allclose(h, explicit_product(rotation.weight.detach()), atol=1e-12)
    assert torch.allclose(h.T @ h, torch.eye(bits, dtype=torch.float64), atol=1e-12)
    x = torch.randn(7, bits, dtype=torch.float64)
    assert torch.allclose(rotation(x), x @ h.T) and torch.allclose(rotation(x).norm(dim=1), x.norm(dim=1))
    rotation(x)[:, 0].sum().backward()
    assert rotation.weight.grad is not None and rotation.weight.grad.abs().sum() > 0
    f32 = HouseholderRotation(bits)
    with torch.no_grad():
        f32.weight.copy_(rotation.weight.float())
    assert torch.allclose(f32.matrix().T @ f32.matrix(), torch.eye(bits), atol=1e-5)


def test_bit_variance():
    assert bit_variance(t([[0.5, -0.5], [1, 2]])).item() == pytest.approx(0.1929033, abs=1e-7)
    assert bit_variance(t([[0.0]])).item() == 0.25
    values = [bit_variance(t([[u]])).item() for u in (0, 0.1, 0.5, 1, 2, 5)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert bit_variance(t([[-0.7, 1.3]])).item() == pytest.approx(bit_variance(t([[0.7, -1.3]])).item(), abs=1e-7)


# --------------------------------------------------------------------------------------------- trainer parts
def stub_trainer(**overrides):
    return build_trainer(Trainer, num_classes=3, seed=4, output_dim=8, **overrides)


def batch(rows=16):
    generator = torch.Generator().manual_seed(rows)
    return {"image": torch.randn(rows, 12, generator=generator), "text": torch.randn(rows, 6, generator=generator),
            "label": (torch.rand(rows, 3, generator=generator) < 0.4).float()}


def test_similarity_step_leaves_the_rotation_alone():
    trainer = stub_trainer()
    groups = trainer.param_groups()
    optimized = {id(p) for g in groups for p in g["params"]}
    assert id(trainer.criterion.rotation.weight) not in optimized
    optimizer = BertAdam(groups, lr=1e-3, warmup=0.1, t_total=10)
    data = batch()
    before = [p.detach().clone() for p in trainer.model.parameters()]
    for _ in range(3):  # the first BertAdam update has lr 0 (warmup)
        optimizer.zero_grad()
        trainer.training_step(data)["loss"].backward()
        optimizer.step()
    assert trainer.criterion.rotation.weight.grad is None
    assert torch.equal(trainer.criterion.rotation.weight, torch.eye(8))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_rotation_fit_changes_only_the_rotation_and_lowers_the_loss():
    trainer = stub_trainer()
    data = batch(64)
    trainer.model.eval()
    with torch.no_grad():
        image, text = trainer.model(data["image"], data["text"])
    before = [p.detach().clone() for p in trainer.model.parameters()]
    start, end = fit_rotation(trainer.criterion.rotation, image, text, steps=100, lr=0.05)
    assert end < start
    assert start == pytest.approx(quantization_loss(HouseholderRotation(8), image, text).item())
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert all(p.grad is None for p in trainer.model.parameters())
    h = trainer.criterion.rotation.matrix().detach()
    assert torch.allclose(h.T @ h, torch.eye(8), atol=1e-5) and not torch.allclose(h, -torch.eye(8))


def hamming(a, b):
    return (a.shape[1] - a @ b.T) / 2


def test_encoding_with_identity_parameter_matches_plain_sign():
    trainer = stub_trainer()
    trainer.model.eval()
    data = batch(20)
    with torch.no_grad():
        image, text = trainer.encode(data)["8"]
        raw_image, raw_text = trainer.model(data["image"], data["text"])
    assert set(image.unique().tolist()) <= {-1.0, 1.0} and set(text.unique().tolist()) <= {-1.0, 1.0}
    plain_image, plain_text = torch.sign(raw_image), torch.sign(raw_text)
    assert torch.equal(image, -plain_image)  # H = −I at init
    assert torch.equal(hamming(image, text), hamming(plain_image, plain_text))
    assert torch.equal(hamming(image, image), hamming(plain_image, plain_image))
    none = stub_trainer(rotation="none")
    none.model.eval()
    with torch.no_grad():
        assert torch.equal(none.encode(data)["8"][0], plain_image)


def test_encoding_uses_the_fitted_rotation():
    trainer = stub_trainer()
    with torch.no_grad():
        trainer.criterion.rotation.weight.copy_(torch.randn(8, 8, generator=torch.Generator().manual_seed(1)))
    trainer.model.eval()
    data = batch(20)
    with torch.no_grad():
        image, _ = trainer.encode(data)["8"]
        raw, _ = trainer.model(data["image"], data["text"])
        expected = torch.sign(raw @ trainer.criterion.rotation.matrix().T)
    assert torch.equal(image, expected)
    assert "rotation.weight" in trainer.criterion.state_dict() and "terms.joint.epsilon" in trainer.criterion.state_dict()
    assert math.isfinite(trainer.criterion.terms["joint"].epsilon.item())
