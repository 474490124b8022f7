"""DAIH tests.

reference_fixtures.json: computed by the reference's own loss.py / utils.py (QinLab-WFU/DAIH @e1e2ba3; the missing
miner replaced by injected triplets). The reconstructed miner's weights (train/distance_weighted.py) are checked
against independent float64 NumPy values in tests/test_distance_weighted.py. See README.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train.DAIH.loss as daih_loss
from train.common import label_similarity
from train.DAIH.clustering import kmeans_labels, standardize_by_labels
from train.DAIH.loss import DecorrelationLoss, MarginLoss, anchor_beta, grad_reverse, margin_triplet_loss, metric_loss
from train.DAIH.miner import sample_triplets
from train.distance_weighted import inverse_sphere_weights, profile_distances
from utils.errors import UserError

HERE = Path(__file__).parent
REF = json.loads((HERE / "reference_fixtures.json").read_text())
F64 = torch.float64

X = [[0.9, -0.2, 0.5, -0.7], [0.4, 0.3, -0.6, -0.1], [-0.5, 0.8, -0.2, 0.3], [-0.3, -0.6, 0.7, 0.9],
     [0.6, 0.1, -0.8, 0.3]]
Y = [[0.7, -0.4, 0.2, -0.5], [0.1, 0.6, -0.3, -0.4], [-0.8, 0.2, 0.4, 0.6], [0.2, -0.9, 0.5, 0.1],
     [0.5, 0.3, -0.6, 0.1]]
LABELS = [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]]
CLUSTERS = [0, 2, 1, 2, 0]
BETA, BETA_AUX = [1.1, 1.25, 1.3], [1.0, 1.15, 1.2, 1.35]


def t(values, grad=False):
    return torch.tensor(values, dtype=F64, requires_grad=grad)


def close(actual, expected, rtol=1e-9, atol=1e-12):
    assert torch.allclose(actual.detach().to(F64), torch.as_tensor(expected, dtype=F64), rtol=rtol, atol=atol), (
        actual, expected)


def one_hot(ids, n):
    return F.one_hot(torch.tensor(ids), n).to(F64)


def unit(rows, grad=True):
    return F.normalize(t(rows), dim=-1).detach().requires_grad_(grad)


def criterion(beta, n):
    loss = MarginLoss(n).double()
    with torch.no_grad():
        loss.beta.copy_(t(beta))
    return loss


@pytest.fixture
def injected(monkeypatch):
    """Replace the sampler by a queue of fixed triplets (what make_fixtures.py fed the reference)."""
    queue = []

    def fixed(distances, labels, *args, **kwargs):
        return tuple(torch.tensor(v, dtype=torch.long) for v in queue.pop(0))

    monkeypatch.setattr(daih_loss, "sample_triplets", fixed)
    return queue


# ---------------------------------------------------------------- reference fixtures: margin loss
@pytest.mark.parametrize("case, clusters, beta, cross", [
    ("margin_multilabel", False, BETA, False),
    ("margin_cross", False, BETA, True),
    ("margin_clusters", True, BETA_AUX, False),  # 1-D cluster ids in the reference, one-hot here
])
def test_margin_loss_matches_reference(injected, case, clusters, beta, cross):
    ref = REF[case]
    labels = one_hot(CLUSTERS, 4) if clusters else t(LABELS)
    x, y = unit(X), unit(Y)
    crit = criterion(beta, len(beta))
    injected.append(ref["triplets"])
    loss, count = crit(x, labels, y if cross else None)
    assert count == ref["count"]
    close(loss, ref["loss"])
    gx, gy, gb = torch.autograd.grad(loss, [x, y, crit.beta], allow_unused=True)
    close(gx, ref["grad_x"])
    if cross:
        close(gy, ref["grad_y"])
    close(gb, ref["grad_beta"])


def test_four_terms_match_reference(injected):
    ref = REF["four_terms"]
    x, y = unit(X), unit(Y)
    crit = criterion(BETA, 3)
    injected.extend(ref["triplets"])
    total = metric_loss(crit, t(LABELS), x, y)
    close(total, ref["loss"])
    for g, expected in zip(torch.autograd.grad(total, [x, y, crit.beta]), ref["grads"]):
        close(g, expected)


def test_decorrelation_matches_reference():
    ref = REF["mutual"]
    loss = DecorrelationLoss(4, hidden=6).double()
    fill(loss, 5)
    cls, aux = t(ref["cls"], grad=True), t(ref["aux"], grad=True)
    value = loss(cls, aux)
    close(value, ref["loss"])
    grads = torch.autograd.grad(value, [cls, aux, *loss.parameters()])
    close(grads[0], ref["grad_cls"])
    close(grads[1], ref["grad_aux"])
    for (name, _), g in zip(loss.named_parameters(), grads[2:]):
        close(g, ref["grad_params"][name])


def fill(module, seed, scale=0.3):
    """Parameters in named order from one generator: randn · scale (as make_fixtures.py)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * scale)


def heads(ref):
    return {k: t(v, grad=True) for k, v in ref["heads"].items()}


def test_class_step_matches_reference(injected):
    """dml(cls embeddings, 4 terms) + 10 · (decorrelation image + text), on raw head outputs normalised first."""
    ref = REF["cls_step"]
    h = heads(ref)
    e = {k: F.normalize(v, dim=-1) for k, v in h.items()}
    crit, adv = criterion(BETA, 3), DecorrelationLoss(4, hidden=6).double()
    fill(adv, 5)
    injected.extend(REF["four_terms"]["triplets"])
    dml = metric_loss(crit, t(LABELS), e["img_cls"], e["txt_cls"])
    mutual = adv(e["img_cls"], e["img_aux"]) + adv(e["txt_cls"], e["txt_aux"])
    loss = dml + 10 * mutual
    close(dml, ref["dml"])
    close(mutual, ref["mutual"])
    close(loss, ref["loss"])
    grads = torch.autograd.grad(loss, [*h.values(), crit.beta, adv.regressor[0].weight])
    for k, g in zip(h, grads):
        close(g, ref["grad_heads"][k])
    close(grads[4], ref["grad_beta"])
    close(grads[5], ref["grad_regressor_first_weight"])


def test_auxiliary_step_matches_reference(injected):
    """Cluster labels per modality, one β per cluster shared by both modalities, + 10 · decorrelation."""
    ref = REF["aux_step"]
    h = heads(REF["cls_step"])
    e = {k: F.normalize(v, dim=-1) for k, v in h.items()}
    crit, adv = criterion(BETA_AUX, 4), DecorrelationLoss(4, hidden=6).double()
    fill(adv, 5)
    injected.extend(ref["triplets"])
    dml = (metric_loss(crit, one_hot(CLUSTERS, 4), e["img_aux"])
           + metric_loss(crit, one_hot(ref["text_clusters"], 4), e["txt_aux"]))
    loss = dml + 10 * (adv(e["img_cls"], e["img_aux"]) + adv(e["txt_cls"], e["txt_aux"]))
    close(dml, ref["dml"])
    close(loss, ref["loss"])
    grads = torch.autograd.grad(loss, [*h.values(), crit.beta])
    for k, g in zip(h, grads):
        close(g, ref["grad_heads"][k])
    close(grads[4], ref["grad_beta"])


def test_empty_triplets_give_zero(injected):
    injected.append(([], [], []))
    x = unit(X)
    loss, count = criterion(BETA, 3)(x, t(LABELS))
    assert count == 0 and loss.item() == 0.0
    assert REF["margin_empty"]["result"] == [0, 0]


def test_standardize_matches_reference():
    ref = REF["standardize"]
    close(standardize_by_labels(t(ref["embeddings"]), t(ref["labels"])), ref["result"], rtol=1e-9)


# ---------------------------------------------------------------- gradient reversal
def test_gradient_reversal_negates_the_gradient():
    v = t([1.5, -2.0, 0.25], grad=True)
    w = t([1.0, 2.0, 3.0])
    out = grad_reverse(v)
    assert torch.equal(out, v)
    (g,) = torch.autograd.grad((out * w).sum(), v)
    close(g, REF["gradrev"]["grad"])
    assert torch.equal(g, -w)


def test_decorrelation_reverses_input_gradients_only():
    torch.manual_seed(0)
    adv = DecorrelationLoss(4, hidden=6).double()
    cls, aux = torch.randn(5, 4, dtype=F64, requires_grad=True), torch.randn(5, 4, dtype=F64, requires_grad=True)
    reversed_grads = torch.autograd.grad(adv(cls, aux), [cls, aux, *adv.parameters()])
    c = F.normalize(cls, dim=-1)
    r = F.normalize(adv.regressor(F.normalize(aux, dim=-1)), dim=-1)
    plain_grads = torch.autograd.grad(-(c * r).square().mean(), [cls, aux, *adv.parameters()])
    for a, b in zip(reversed_grads[:2], plain_grads[:2]):
        assert torch.allclose(a, -b)
    for a, b in zip(reversed_grads[2:], plain_grads[2:]):
        assert torch.allclose(a, b)


# ---------------------------------------------------------------- reconstructed miner (its weights:
# tests/test_distance_weighted.py)
def distance_rows(cross=False):
    x, y = F.normalize(t(X), dim=-1), F.normalize(t(Y), dim=-1)
    return torch.cdist(x, y if cross else x)


def test_sampled_triplets_respect_labels_and_skip_rows_without_negatives():
    labels = t([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 1]])
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(6, 8, dtype=F64, generator=g), dim=1)
    shares = label_similarity(labels)
    for _ in range(50):
        a, p, n = sample_triplets(torch.cdist(x, x), labels, 8, generator=g)
        assert torch.equal(a, torch.tensor([0, 1, 2, 4, 5]))  # row 3 has no label; every other has a positive
        assert torch.all(shares[a, p]) and torch.all(p != a) and not torch.any(shares[a, n])


def test_all_positives_mode_pairs_every_positive_with_a_negative():
    labels = t([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 1, 1]])
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(6, 8, dtype=F64, generator=g), dim=1)
    shares = label_similarity(labels)
    a, p, n = sample_triplets(torch.cdist(x, x), labels, 8, generator=g, positives="all")
    expected = [(i, j) for i in range(6) for j in range(6) if i != j and shares[i, j] and i != 3]
    assert list(zip(a.tolist(), p.tolist())) == expected
    assert not torch.any(shares[a, n])
    with pytest.raises(ValueError, match="positive sampling"):
        sample_triplets(torch.cdist(x, x), labels, 8, positives="some")


def test_negative_frequencies_follow_the_weights():
    labels = t([[1, 0]] * 2 + [[0, 1]] * 6)
    g = torch.Generator().manual_seed(1)
    x = F.normalize(torch.randn(8, 3, dtype=F64, generator=g), dim=1)
    d = torch.cdist(x, x)
    weights = inverse_sphere_weights(d[:1], (label_similarity(labels))[:1], 3)[0]
    counts = torch.zeros(8, dtype=F64)
    for _ in range(1500):
        a, _, n = sample_triplets(d, labels, 3, generator=g)
        counts[n[0]] += 1
    assert torch.allclose(counts / 1500, weights, atol=0.045)  # 3.5 standard deviations at most


def test_sampling_is_deterministic_under_a_generator():
    d = distance_rows()
    first = sample_triplets(d, t(LABELS), 4, generator=torch.Generator().manual_seed(3))
    second = sample_triplets(d, t(LABELS), 4, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_distance_matrix_mode_draws_from_row_profile_weights():
    d = distance_rows()
    with pytest.raises(ValueError, match="miner input"):
        sample_triplets(d, t(LABELS), 4, mode="profile")
    weights = inverse_sphere_weights(profile_distances(d), (t(LABELS) @ t(LABELS).T) > 0, 5)
    g = torch.Generator().manual_seed(4)
    for _ in range(20):
        a, _, n = sample_triplets(d, t(LABELS), 4, mode="distance_matrix", generator=g)
        assert torch.all(weights[a, n] > 0)
    a, _, n = sample_triplets(d, t(LABELS), 4, mode="distance_matrix", generator=g)
    assert n[a == 1].tolist() == [3]  # row 1's only negative


# ---------------------------------------------------------------- edge cases and properties
def test_no_shared_label_single_sample_and_zero_rows_give_zero_loss():
    crit = MarginLoss(3).double()
    x = unit(X[:3])
    for labels in (t([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), t([[1, 1, 0], [1, 0, 0], [1, 0, 1]]), t([[0, 0, 0]] * 3)):
        loss, count = crit(x, labels)
        assert count == 0 and loss.item() == 0
        assert not loss.requires_grad  # the base skips backward for a loss without gradient
    one, count = crit(unit(X[:1]), t([[1, 0, 0]]))
    assert count == 0 and one.item() == 0


def test_anchor_beta_for_multi_labels_and_clusters():
    beta = t([1.0, 2.0, 4.0])
    close(anchor_beta(beta, t([[1, 0, 1], [0, 1, 0], [0, 0, 0]])), [2.5, 2.0, 0.0])
    close(anchor_beta(beta, one_hot([2, 0], 3)), [4.0, 1.0])


def test_margin_counts_triplets_with_an_active_term():
    d = t([[0.0, 0.5, 1.6], [0.5, 0.0, 0.9], [1.6, 0.9, 0.0]], grad=True)
    beta_a = t([1.2, 1.2, 1.2])
    # triplet 0: pos relu(0.5 − 1.2 + 0.2) = 0, neg relu(1.2 − 1.6 + 0.2) = 0 → inactive
    # triplet 1: pos 0, neg relu(1.2 − 0.9 + 0.2) = 0.5 → active
    value = margin_triplet_loss(d, beta_a, torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([2, 2]))
    assert value.item() == pytest.approx(0.5)


def test_bf16_autocast_runs_in_float32():
    crit = MarginLoss(3)
    x = F.normalize(torch.tensor(X), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = crit(x, torch.tensor(LABELS, dtype=torch.float32), generator=torch.Generator().manual_seed(0))
        dec = DecorrelationLoss(4, hidden=6)(x, x.flip(1))
    assert loss.dtype == torch.float32 and dec.dtype == torch.float32
    ref, _ = crit(x, torch.tensor(LABELS, dtype=torch.float32), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss, ref)


# ---------------------------------------------------------------- clustering
def test_kmeans_recovers_separated_groups_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    truth = torch.arange(3).repeat_interleave(20)
    features = centres[truth] + 0.1 * torch.randn(60, 3, generator=g)
    ids = kmeans_labels(features, 3, seed=1)
    assert len(set(zip(truth.tolist(), ids.tolist()))) == 3  # a bijection between groups and clusters
    assert torch.equal(ids, kmeans_labels(features, 3, seed=1))
    with pytest.raises(UserError, match="clusters"):
        kmeans_labels(features[:2], 3)


def test_standardize_equals_loop_and_rejects_unlabelled_samples():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 4, dtype=F64, generator=g)
    labels = t([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 1]])
    expected = []
    for i in range(7):
        rows = []
        for c in labels[i].nonzero().squeeze(1):
            members = x[labels[:, c] > 0]
            rows.append((x[i] - members.mean(0)) / (members.std(0, unbiased=False).clamp_min(1e-6) + 1e-6))
        expected.append(torch.stack(rows).mean(0))
    assert torch.allclose(standardize_by_labels(x, labels), torch.stack(expected))
    with pytest.raises(UserError, match="no label"):
        standardize_by_labels(x, torch.zeros(7, 3))
    assert math.isfinite(float(standardize_by_labels(x.float(), labels).abs().max()))
    assert np.isfinite(kmeans_labels(standardize_by_labels(x, labels), 2).numpy()).all()


# ---------------------------------------------------------------- trainer
def daih_trainer(**options):
    from train.DAIH import Trainer
    from train.testing import StubBackbone, build_trainer

    labels = torch.eye(3)[torch.arange(24) % 3]
    labels[::4, 1] = 1  # some samples with two labels
    options = {"output_dim": 8, "n_clusters": 3, "adversarial_hidden": 6, "lr": 1e-2, "clip_lr": 1e-2,
               "beta_lr": 1e-2, "adversarial_lr": 1e-2, **options}
    trainer = build_trainer(Trainer, backbone=StubBackbone(embed_dim=10), train_labels=labels, **options)
    trainer.cluster_ids = torch.stack([torch.arange(24) % 3, (torch.arange(24) // 2) % 3])
    return trainer


def labelled_batch(trainer, rows=8, seed=0):
    from train.testing import stub_batch

    batch = stub_batch(trainer, rows=rows, seed=seed)
    batch["label"] = trainer.train_labels[:rows].clone()
    return batch


def auxiliary_batches(trainer, count, rows=8):
    from train.testing import stub_batch

    for i in range(count):
        image, text = stub_batch(trainer, rows, seed=100 + i), stub_batch(trainer, rows, seed=200 + i)
        image["index"], text["index"] = torch.arange(rows) + 3, torch.arange(rows).flip(0) + 10
        yield trainer.auxiliary_batch(image, text)


def snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def moved(module, before):
    return {name for name, p in module.named_parameters() if not torch.equal(p.detach(), before[name])}


def test_config_reference_defaults_and_inapplicable_options():
    from train.DAIH import Trainer

    cfg = Trainer.Config()
    assert (cfg.epochs, cfg.batch_size, cfg.output_dim, cfg.lr, cfg.clip_lr, cfg.weight_decay) == \
        (100, 128, 32, 1e-5, 1e-5, 4e-4)
    assert (cfg.beta, cfg.beta_lr, cfg.margin, cfg.miner_input, cfg.miner_cutoff) == (1.2, 5e-4, 0.2, "embeddings", 0.5)
    assert (cfg.adversarial_weight, cfg.adversarial_hidden, cfg.adversarial_lr, cfg.adversarial_weight_decay) == \
        (10.0, 512, 1e-5, 1e-6)
    assert (cfg.n_clusters, cfg.cluster_update_every, cfg.class_step_probability,
            cfg.auxiliary_step_probability) == (10, 3, 1.0, 0.8)
    assert {"head_init", "head_dropout", "max_grad_norm"} <= set(Trainer.Config.inapplicable)
    assert cfg.lr_schedule == "constant" and cfg.patience == 10
    with pytest.raises(UserError, match="auxiliary-step-probability"):
        Trainer.Config(auxiliary_step_probability=1.5)
    demo = Trainer.Config.defaults_for("demo")
    assert (demo["epochs"], demo["lr_schedule"], demo["miner_positives"], demo["miner_cutoff"],
            demo["adversarial_weight"], demo["auxiliary_step_probability"], demo["backbone"]) == \
        (40, "warmup_cosine", "all", 1.4, 1.0, 0.3, "tiny")
    for name in ("coco", "flickr25k", "nuswide"):
        assert not {"lr_schedule", "miner_positives", "adversarial_weight"} & set(Trainer.Config.defaults_for(name))


def test_model_has_two_normalised_heads_per_modality_and_codes_are_the_class_signs():
    trainer = daih_trainer()
    batch = labelled_batch(trainer)
    model = trainer.model
    for embed, data in ((model.embed_image, batch["image"]), (model.embed_text, batch["text"])):
        cls, aux = embed(data)
        assert cls.shape == aux.shape == (8, 8)
        assert torch.allclose(cls.norm(dim=1), torch.ones(8)) and torch.allclose(aux.norm(dim=1), torch.ones(8))
        assert not torch.allclose(cls, aux)
    image, text = trainer.encode(batch)["8"]
    assert torch.equal(image, torch.where(model.embed_image(batch["image"])[0] >= 0, 1.0, -1.0))
    assert set(text.unique().tolist()) <= {-1.0, 1.0}


def test_one_plain_adam_with_the_reference_groups():
    trainer = daih_trainer(lr=1e-4, clip_lr=2e-4, weight_decay=3e-4, beta_lr=5e-4, adversarial_lr=6e-4,
                           adversarial_weight_decay=1e-6)
    assert len(trainer.optimizers) == 1 and type(trainer.optimizer) is torch.optim.Adam
    groups = trainer.optimizer.param_groups
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(2e-4, 3e-4), (1e-4, 3e-4), (6e-4, 1e-6), (5e-4, 0.0),
                                                             (5e-4, 0.0)]
    ids = [id(p) for g in groups for p in g["params"]]
    every = [*trainer.model.parameters(), *trainer.criterion.parameters()]
    assert sorted(ids) == sorted(id(p) for p in every)  # each parameter in exactly one group
    assert groups[3]["params"][0] is trainer.criterion.cls.beta and groups[4]["params"][0] is trainer.criterion.aux.beta


@pytest.mark.parametrize("class_p, aux_p", [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_gated_steps_move_what_their_losses_reach(class_p, aux_p):
    trainer = daih_trainer(class_step_probability=class_p, auxiliary_step_probability=aux_p)
    trainer.auxiliary_batches = auxiliary_batches(trainer, 1)
    before, model_before = snapshot(trainer.criterion), snapshot(trainer.model)
    out = trainer.optimization_step(labelled_batch(trainer))
    changed = moved(trainer.criterion, before)
    assert ("cls.beta" in changed) == bool(class_p) and ("aux.beta" in changed) == bool(aux_p)
    assert any(name.startswith("decorrelation.") for name in changed)
    assert any(name.startswith("backbone.") for name in moved(trainer.model, model_before))
    steps = trainer.optimizer.state[trainer.criterion.decorrelation.regressor[0].weight]["step"]
    assert int(steps) == int(class_p) + int(aux_p)  # one Adam step per taken task
    assert float(out["auxiliary_steps"]) == aux_p
    assert (float(out["class_metric"]) > 0) == bool(class_p) and (float(out["auxiliary_metric"]) > 0) == bool(aux_p)
    assert next(trainer.auxiliary_batches, None) is None  # the auxiliary batch is drawn in every iteration


def test_gates_come_from_the_step_generator():
    trainer = daih_trainer(lr=0.0, clip_lr=0.0, beta_lr=0.0, adversarial_lr=0.0)
    trainer.auxiliary_batches = auxiliary_batches(trainer, 30)
    taken = []
    for step in range(30):
        trainer.global_step = step
        taken.append(float(trainer.optimization_step(labelled_batch(trainer))["auxiliary_steps"]))
    expected = []
    for step in range(30):
        trainer.global_step = step
        expected.append(float(torch.rand(2, generator=trainer.step_generator(0))[1] < 0.8))
    assert taken == expected and 0 < sum(taken) < 30


def test_auxiliary_step_labels_each_modality_with_its_cluster_ids(monkeypatch):
    trainer = daih_trainer()
    seen = {}

    def capture(image_cls, image_aux, image_clusters, text_cls, text_aux, text_clusters, generator=None):
        seen.update(image=image_clusters, text=text_clusters)
        return {"loss": image_aux.sum() + text_aux.sum()}

    monkeypatch.setattr(trainer.criterion, "auxiliary_step", capture)
    batch = next(auxiliary_batches(trainer, 1))
    trainer.training_step(batch)
    assert torch.equal(seen["image"], F.one_hot(trainer.cluster_ids[0][batch["image_index"]], 3).float())
    assert torch.equal(seen["text"], F.one_hot(trainer.cluster_ids[1][batch["text_index"]], 3).float())


def test_clusters_before_training_and_after_every_third_epoch(monkeypatch):
    trainer = daih_trainer()
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 10) * 5
    groups = torch.arange(24) // 8
    features = {"features": (centres[groups] + 0.1 * torch.randn(24, 10, generator=g),
                             centres[groups.flip(0)] + 0.1 * torch.randn(24, 10, generator=g)),
                "auxiliary": (centres[(groups + 1) % 3, :8] + 0.1 * torch.randn(24, 8, generator=g),
                              centres[groups, :8] + 0.1 * torch.randn(24, 8, generator=g))}
    calls = []

    def embeddings(kind):
        calls.append(kind)
        return features[kind]

    monkeypatch.setattr(trainer, "training_set_embeddings", embeddings)
    monkeypatch.setattr(trainer, "auxiliary_iterator", lambda epoch: iter(()))
    trainer.cluster_ids = None
    trainer.on_epoch_start(0)
    assert calls == ["features"] and trainer.cluster_ids.shape == (2, 24)
    initial = trainer.cluster_ids.clone()
    labels = trainer.train_labels
    for m, rows in enumerate(features["features"]):  # normalised, standardised by class, k-means
        expected = kmeans_labels(standardize_by_labels(F.normalize(rows, dim=1), labels), 3, seed=m)  # seed 0, epoch 0
        assert torch.equal(initial[m], expected)
    for epoch in range(6):
        trainer.on_epoch_end(epoch)
    assert calls == ["features", "auxiliary", "auxiliary"]  # after epochs 3 and 6 (1-based)
    assert len(set(zip(((groups + 1) % 3).tolist(), trainer.cluster_ids[0].tolist()))) == 3
    trainer.on_epoch_start(1)  # a later epoch keeps the ids (e.g. after --resume)
    assert calls[-1] == "auxiliary"
    again = daih_trainer()
    monkeypatch.setattr(again, "training_set_embeddings", embeddings)
    assert torch.equal(again.initial_clusters(), initial)  # seeded: every process computes the same ids


def test_cluster_ids_survive_a_checkpoint():
    trainer = daih_trainer()
    state = trainer.extra_state()
    other = daih_trainer()
    other.cluster_ids = None
    other.load_extra_state(state)
    assert torch.equal(other.cluster_ids, trainer.cluster_ids)
    other.load_extra_state({})  # a checkpoint without ids leaves them
    assert other.cluster_ids is not None


def test_learning_rate_schedule_follows_the_global_step():
    from utils.optim import warmup_cosine

    constant = daih_trainer()
    constant.global_step = 7
    constant.set_learning_rates()
    assert [g["lr"] for g in constant.optimizer.param_groups] == [1e-2, 1e-2, 1e-2, 1e-2, 1e-2]
    trainer = daih_trainer(lr_schedule="warmup_cosine", warmup_proportion=0.2, epochs=2, beta_lr=5e-3)
    total = trainer.steps_per_epoch * 2  # 20 steps, 4 of warmup
    for step in (0, 2, 4, 13):
        trainer.global_step = step
        trainer.set_learning_rates()
        factor = warmup_cosine(step / total, 0.2)
        assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx(
            [1e-2 * factor] * 3 + [5e-3 * factor] * 2)
