"""DSTH: reference fixtures (QinLab-WFU/DSTH @7c046a7, float64, see README "How the fixtures were produced"),
the vectorised forms against explicit loops, and edge cases."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from train.common import label_similarity
from train.DSTH.hypergraph import ClassGaussians, HypergraphClassifier, mahalanobis, propagation_matrix
from train.DSTH.loss import DSTHLoss, StructureHead, dtsh_loss, self_ranking_loss, soft_cross_entropy

REF = json.loads((Path(__file__).parent / "reference_fixtures.json").read_text())
F64 = torch.float64


def t(values, grad=False):
    return torch.tensor(values, dtype=F64, requires_grad=grad)


def close(actual, expected, rtol=1e-9, atol=1e-12):
    expected = torch.as_tensor(expected, dtype=F64)
    assert torch.allclose(actual.detach().to(F64), expected, rtol=rtol, atol=atol), (actual, expected)


def seeded_fill(module, seed, scale=0.3):
    """Parameters in named order from one generator: randn · scale (+1 for 1-D weights), as make_fixtures.py."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            v = torch.randn(p.shape, generator=g, dtype=F64) * scale
            p.copy_(v + 1 if name.endswith("weight") and p.dim() == 1 else v)


def reference_criterion() -> DSTHLoss:
    """The fixture's modules: C = 3, K = 4, D = 6, HGNN hidden 5, the constants and seeds of make_fixtures.py."""
    loss = DSTHLoss(bits=4, num_classes=3, feature_dim=6, hidden=5).double()
    for g in loss.gaussians:
        with torch.no_grad():
            g.means.copy_(t(REF["constants"]["means"]))
            g.log_vars.copy_(t(REF["constants"]["log_vars"]))
    seeded_fill(loss.classifiers[0], 11)
    seeded_fill(loss.classifiers[1], 12)
    seeded_fill(loss.structure[0], 21, 0.1)
    seeded_fill(loss.structure[1], 22, 0.1)
    return loss


# ---------------------------------------------------------------- reference fixtures
@pytest.mark.parametrize("case", ["A", "B"])
def test_full_step_matches_reference(case):
    ref = REF[case]
    labels = t(ref["labels"])
    img, txt, fi, ft = (t(ref[k], grad=True) for k in ("img", "txt", "fi", "ft"))
    criterion = reference_criterion()
    out = criterion(img, txt, fi, ft, labels)
    close(out["graph_ce"], ref["ce_i"] + ref["ce_t"])
    close(out["dtsh"], ref["dtsh_i"] + ref["dtsh_t"] + ref["dtsh_it"])
    close(out["self_ranking"], ref["nasa_i"] + ref["nasa_t"])
    close(out["loss"], ref["total"])
    close(out["distribution"], ref["dist_loss_i"] + ref["dist_loss_t"], rtol=1e-8)
    gaussians = criterion.gaussians[0]
    grads = torch.autograd.grad(out["loss"], [img, txt, fi, ft, gaussians.means, gaussians.log_vars])
    for name, g in zip(["img", "txt", "fi", "ft", "means_i", "log_vars_i"], grads):
        close(g, ref[f"grad_{name}"], rtol=1e-7, atol=1e-11)


@pytest.mark.parametrize("case", ["A", "B"])
def test_hypergraph_and_classifier_match_reference(case):
    ref = REF[case]
    labels = t(ref["labels"])
    criterion = reference_criterion()
    for m, codes in enumerate((t(ref["img"]), t(ref["txt"]))):
        suffix = "it"[m]
        distribution, incidence = criterion.gaussians[m](codes, labels)
        close(distribution, ref[f"dist_loss_{suffix}"], rtol=1e-8)
        close(incidence, ref[f"H_{suffix}"])
        close(criterion.classifiers[m](codes, incidence), ref[f"out_{suffix}"])
        close(soft_cross_entropy(criterion.classifiers[m](codes, incidence), labels), ref[f"ce_{suffix}"])
    close(criterion.structure[0](t(ref["fi"])), ref["structure_i"])


@pytest.mark.parametrize("case", ["A", "B"])
def test_distribution_loss_gradient_matches_reference(case):
    ref = REF[case]
    img = t(ref["img"], grad=True)
    gaussians = reference_criterion().gaussians[0]
    distribution, _ = gaussians(img, t(ref["labels"]))
    close(torch.autograd.grad(distribution, img)[0], ref["dist_grad_img"], rtol=1e-7, atol=1e-14)


@pytest.mark.parametrize("case", ["A", "B"])
def test_self_ranking_with_given_structure_matches_reference(case):
    ref = REF[case]
    fi = t(ref["fi"], grad=True)
    s = t([[0.5 + 0.1 * ((i * 7 + j * 3) % 10) for j in range(6)] for i in range(len(ref["fi"]))], grad=True)
    value = self_ranking_loss(fi, s)
    close(value, ref["nasa_fixed_structure"])
    gf, gs = torch.autograd.grad(value, [fi, s])
    close(gf, ref["nasa_fixed_grad_features"], rtol=1e-8)
    close(gs, ref["nasa_fixed_grad_structure"], rtol=1e-8)


@pytest.mark.parametrize("case", ["A", "B"])
def test_cross_modal_dtsh_matches_reference(case):
    ref = REF[case]
    img, txt = t(ref["img"], grad=True), t(ref["txt"], grad=True)
    labels = t(ref["labels"])
    value = dtsh_loss(img, labels, txt)
    close(value, ref["dtsh_it"])
    gi, gt = torch.autograd.grad(value, [img, txt])
    close(gi, ref["dtsh_it_grad_img"])
    close(gt, ref["dtsh_it_grad_txt"])
    close(dtsh_loss(img, labels), ref["dtsh_i"])
    close(dtsh_loss(txt, labels), ref["dtsh_t"])


# ---------------------------------------------------------------- vectorised forms against explicit loops
def random_batch(b=6, k=5, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(b, c, generator=g) < 0.4).to(F64)
    labels[0] = 0
    labels[1] = 0
    labels[1, 0] = 1
    return labels, torch.tanh(torch.randn(b, k, generator=g, dtype=F64)), torch.tanh(
        torch.randn(b, k, generator=g, dtype=F64))


def test_dtsh_equals_row_loop():
    labels, u, v = random_batch()
    s = label_similarity(labels)
    theta = u @ v.T
    total, count = 0.0, 0
    for row in range(len(u)):
        if s[row].any() and (~s[row]).any():
            count += 1
            triple = (theta[row][s[row]][:, None] - theta[row][~s[row]][None, :] - 0.5).clamp(-100, 50)
            total = total + (-(triple - torch.log(1 + torch.exp(triple)))).mean()
    expected = total / count + 0.1 * (u - u.sign()).square().mean()
    assert torch.allclose(dtsh_loss(u, labels, v), expected)


def test_dtsh_clamp_stops_the_gradient_of_saturated_triplets():
    u = t([[60.0, 0], [60.0, 0], [-60.0, 0]], grad=True)
    labels = t([[1, 0], [1, 0], [0, 1]])
    value = dtsh_loss(u, labels, quantization=0.0)
    assert value.item() == pytest.approx(math.log1p(math.exp(-50)) * 2 / 3, rel=1e-9)
    assert torch.all(torch.autograd.grad(value, u)[0] == 0)


def test_self_ranking_equals_explicit_pairs():
    g = torch.Generator().manual_seed(3)
    e = torch.randn(5, 7, generator=g, dtype=F64)
    s = 0.5 + torch.rand(5, 7, generator=g, dtype=F64)
    d = torch.cdist(e, e)
    eta = [d.mean(), torch.maximum(0.2 * d.mean(), d.mean() - 3 * d.std())]
    adaptive = torch.stack([((e[i] - e).square().clamp(min=1e-12) * s[i]).sum(1).sqrt() for i in range(5)])
    off = adaptive[~torch.eye(5, dtype=torch.bool)]
    a, b = (off - eta[0]).abs(), (off - eta[1]).abs()
    c = torch.exp(-10 * a) / (torch.exp(-10 * a) + torch.exp(-10 * b))
    assert torch.allclose(self_ranking_loss(e, s), (c * a + (1 - c) * b).mean())


def test_self_ranking_duplicates_keep_finite_gradients():
    e = t([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, -1.0, 2.0]], grad=True)
    s = t([[1.0, 1.2, 0.8]] * 3, grad=True)
    value = self_ranking_loss(e.float(), s.float())
    assert value.dtype == torch.float32
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(value, [e, s]))


def test_propagation_matrix_equals_reference_formula():
    h = t([[1.0, 0.3, 0.8], [0.5, 1.0, 0.2], [0.9, 0.7, 1.0], [0.4, 1.0, 0.6]])
    dv, de = torch.diag(h.sum(1).pow(-0.5)), torch.diag(h.sum(0).pow(-1))
    assert torch.allclose(propagation_matrix(h), dv @ h @ de @ h.T @ dv)


def test_mahalanobis_clips_log_variances_with_relu6():
    codes, means = t([[3.0, 4.0]]), t([[0.0, 2.0]])
    # x̂ = (0.6, 0.8), μ̂ = (0, 1): squared differences 0.36, 0.04; variances e^0 (clipped −2) and e^6 (clipped 9)
    assert mahalanobis(codes, means, t([[-2.0, 9.0]])).item() == pytest.approx(0.36 + 0.04 / math.exp(6))


# ---------------------------------------------------------------- properties and edge cases
def test_incidence_keeps_only_present_classes():
    gaussians = ClassGaussians(4, 3).double()
    labels = t([[1, 0, 0, 0], [0, 0, 1, 0], [1, 0, 1, 0]])
    _, h = gaussians(torch.randn(3, 3, dtype=F64), labels)
    assert h.shape == (3, 2)
    assert torch.equal(h[labels[:, [0, 2]] == 1], torch.ones(4, dtype=F64))
    assert torch.all((h > 0) & (h <= 1))


def test_unlabelled_rows_are_left_out_of_the_distribution_loss():
    gaussians = ClassGaussians(2, 3).double()
    codes = torch.randn(3, 3, dtype=F64)
    labels = t([[1, 0], [0, 0], [0, 1]])
    full, _ = gaussians(codes, labels)
    keep = torch.tensor([0, 2])
    partial, _ = gaussians(codes[keep], labels[keep])
    assert torch.allclose(full, partial)
    none, h = gaussians(codes, torch.zeros(3, 2, dtype=F64))
    assert none.item() == 0 and h.shape == (3, 0)


def test_no_label_disjoint_pair_leaves_only_quantisation():
    u = torch.tanh(torch.randn(4, 6, dtype=F64))
    labels = t([[1, 0], [1, 1], [1, 0], [1, 0]])
    assert torch.allclose(dtsh_loss(u, labels), 0.1 * (u - u.sign()).square().mean())


def test_single_sample_and_unlabelled_batches_give_finite_losses():
    torch.manual_seed(0)
    criterion = DSTHLoss(bits=4, num_classes=3, feature_dim=6, hidden=8)
    one = criterion(torch.tanh(torch.randn(1, 4)), torch.tanh(torch.randn(1, 4)), torch.randn(1, 6),
                    torch.randn(1, 6), torch.tensor([[1.0, 0, 0]]))
    assert one["graph_ce"].item() == 0 and one["self_ranking"].item() == 0 and torch.isfinite(one["loss"])
    blank = criterion(torch.tanh(torch.randn(3, 4)), torch.tanh(torch.randn(3, 4)), torch.randn(3, 6),
                      torch.randn(3, 6), torch.zeros(3, 3))
    assert blank["graph_ce"].item() == 0 and torch.isfinite(blank["loss"])


def test_distribution_weight_adds_the_distribution_loss():
    torch.manual_seed(0)
    labels, img, txt = random_batch(b=5, k=4, c=3, seed=1)
    fi, ft = torch.randn(5, 6, dtype=F64), torch.randn(5, 6, dtype=F64)
    base = DSTHLoss(4, 3, feature_dim=6, hidden=8).double()
    weighted = DSTHLoss(4, 3, feature_dim=6, hidden=8, distribution_weight=0.5).double()
    weighted.load_state_dict(base.state_dict())
    a, b = base(img, txt, fi, ft, labels), weighted(img, txt, fi, ft, labels)
    assert torch.allclose(b["loss"], a["loss"] + 0.5 * a["distribution"])


def test_structure_head_range_and_batch_statistics_in_eval_mode():
    torch.manual_seed(0)
    head = StructureHead(6, hidden=16)
    x = torch.randn(5, 6) * 100
    train_out = head(x)
    assert torch.all((train_out > 0.5) & (train_out < 1.5))
    head.eval()
    assert torch.allclose(head(x), train_out)


def test_bf16_autocast_runs_in_float32():
    torch.manual_seed(0)
    criterion = DSTHLoss(4, 3, feature_dim=6, hidden=8)
    labels, img, txt = random_batch(b=5, k=4, c=3, seed=2)
    args = (img.float(), txt.float(), torch.randn(5, 6), torch.randn(5, 6), labels.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = criterion(*args)
    assert out["loss"].dtype == torch.float32
    assert torch.allclose(out["loss"], criterion(*args)["loss"], rtol=1e-5)


def test_hypergraph_classifier_is_permutation_equivariant():
    torch.manual_seed(0)
    clf = HypergraphClassifier(4, 3, hidden=8).double()
    codes, h = torch.randn(5, 4, dtype=F64), torch.rand(5, 3, dtype=F64) + 0.1
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(clf(codes, h)[perm], clf(codes[perm], h[perm]))


def test_soft_cross_entropy_equals_torch():
    logits, targets = torch.randn(4, 3, dtype=F64), t([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]])
    assert torch.allclose(soft_cross_entropy(logits, targets), F.cross_entropy(logits, targets))


def test_dtsh_chunks_give_the_values_and_gradients_of_one_pass():
    labels, u, v = random_batch(b=9, k=5, c=4, seed=4)
    u, v = u.requires_grad_(True), v.requires_grad_(True)
    whole = dtsh_loss(u, labels, v)
    chunked = dtsh_loss(u, labels, v, max_entries=2 * 81)  # two rows per chunk (81 = 9²): checkpointed chunks
    assert torch.allclose(whole, chunked, rtol=1e-12)
    for a, b in zip(torch.autograd.grad(whole, [u, v]), torch.autograd.grad(chunked, [u, v])):
        assert torch.allclose(a, b, rtol=1e-12)


# ---------------------------------------------------------------- trainer
def dsth_trainer(**options):
    from train.DSTH import Trainer
    from train.testing import StubBackbone, build_trainer

    options = {"output_dim": 8, "hgnn_hidden": 16, "head_dropout": 0.0, **options}
    return build_trainer(Trainer, backbone=StubBackbone(embed_dim=12), num_classes=3, **options)


def test_config_defaults():
    from train.DSTH import Trainer

    cfg = Trainer.Config()
    assert (cfg.epochs, cfg.batch_size, cfg.head_init, cfg.lr, cfg.clip_lr) == (200, 128, "kaiming", 1e-3, 1e-5)
    assert (cfg.hgnn_hidden, cfg.tau, cfg.alpha, cfg.dtsh_margin, cfg.quantization_weight) == (1024, 27, 0.1, 0.5, 0.1)
    assert (cfg.sr_margin, cfg.sr_scale, cfg.distribution_weight) == (3.0, 10.0, 0.0)
    assert Trainer.distributed == "exact"
    demo = Trainer.Config.defaults_for("demo")
    assert (demo["head_init"], demo["self_ranking_weight"], demo["epochs"], demo["backbone"]) == \
        ("default", 0.1, 15, "tiny")
    for name in ("coco", "flickr25k", "nuswide"):
        assert not {"head_init", "self_ranking_weight"} & set(Trainer.Config.defaults_for(name))


def test_one_bertadam_covers_the_model_and_the_criterion_at_their_rates():
    trainer = dsth_trainer()
    assert len(trainer.optimizers) == 1
    groups = trainer.optimizer.param_groups
    assert [g["lr"] for g in groups] == [1e-5, 1e-3]
    backbone = {id(p) for p in trainer.backbone.parameters()}
    assert {id(p) for p in groups[0]["params"]} == backbone
    rest = {id(p) for p in trainer.model.parameters()} - backbone | {id(p) for p in trainer.criterion.parameters()}
    assert {id(p) for p in groups[1]["params"]} == rest
    assert trainer.criterion.structure[0].net[0].in_features == 12  # the backbone's feature size


def test_one_step_trains_backbone_heads_gaussians_hypergraph_nets_and_structure_heads():
    trainer = dsth_trainer()
    before = {name: p.detach().clone() for name, p in trainer.criterion.named_parameters()}
    before.update({f"model.{name}": p.detach().clone() for name, p in trainer.model.named_parameters()})
    for _ in range(2):  # the warmup's first step has learning rate 0
        out = trainer.optimization_step(stub_batch_with_labels(trainer))
    assert {"loss", "graph_ce", "dtsh", "self_ranking", "distribution"} <= set(out)
    moved = {name for name, p in [*trainer.criterion.named_parameters(),
                                  *((f"model.{n}", p) for n, p in trainer.model.named_parameters())]
             if not torch.equal(p.detach(), before[name])}
    for prefix in ("model.backbone.image", "model.backbone.text", "model.image_head", "model.text_head",
                   "gaussians.0.means", "gaussians.1.log_vars", "classifiers.0.theta1", "classifiers.1.theta2",
                   "structure.0.net", "structure.1.net"):
        assert any(name.startswith(prefix) for name in moved), prefix


def stub_batch_with_labels(trainer, rows=8, seed=0):
    from train.testing import stub_batch

    batch = stub_batch(trainer, rows=rows, seed=seed)
    batch["label"][torch.arange(rows), torch.arange(rows) % trainer.num_classes] = 1  # every sample labelled
    return batch


def test_the_self_ranking_term_reaches_the_backbone_through_the_features():
    trainer = dsth_trainer()
    out = trainer.training_step(stub_batch_with_labels(trainer))
    grads = torch.autograd.grad(out["self_ranking"], [trainer.backbone.image.weight, trainer.backbone.text.weight])
    assert all(g.abs().sum() > 0 for g in grads)
    head = trainer.model.image_head.fc.weight
    assert torch.autograd.grad(out["self_ranking"], head, allow_unused=True)[0] is None  # features, not codes


def test_training_step_of_one_sample_gives_zero_graph_and_self_ranking_terms():
    trainer = dsth_trainer()
    out = trainer.training_step(stub_batch_with_labels(trainer, rows=1))
    assert out["graph_ce"].item() == 0 and out["self_ranking"].item() == 0 and torch.isfinite(out["loss"])


def test_encode_gives_signs_of_the_heads():
    from utils.metrics import to_binary_codes

    trainer = dsth_trainer()
    trainer.model.eval()
    batch = stub_batch_with_labels(trainer, rows=5)
    codes = trainer.encode(batch)
    image, text = codes["8"]
    assert image.shape == text.shape == (5, 8) and set(image.unique().tolist()) <= {-1.0, 1.0}
    expected = torch.tanh(trainer.model.image_head.fc(trainer.backbone.encode_image(batch["image"])))
    assert torch.equal(image, to_binary_codes(expected))
