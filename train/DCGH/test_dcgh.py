"""DCGH: reference fixtures (loss terms, total, gradients) and properties of the loss.

The fixtures were computed by the reference loss (donnotnormal/DCGH @9177df6, utils/utils.py `HyP`) on CPU in
float64; README.md, "How the fixtures were produced".
"""
import math

import pytest
import torch

from train.common import cosine
from train.DCGH import Trainer
from train.DCGH.loss import DCGHLoss, negative_pair_terms, pairwise_term, proxy_terms
from train.DCGH.trainer import DCGHConfig
from train.testing import build_trainer, stub_batch
from utils.errors import UserError

P = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.6, 0.5]]
X = [[0.9, 0.5, -0.2], [-0.1, 0.8, -0.7], [0.3, -0.4, 0.6], [-0.8, 0.1, 0.5]]
Y = [[0.7, -0.1, 0.4], [0.5, 0.9, 0.2], [0.1, 0.2, 0.8], [0.4, -0.6, 0.3]]
P2, X2, Y2 = [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.2], [0.3, -1.0]], [[0.5, 0.5], [-0.2, 0.9]]

# A: rows 0, 1 multi-label and label-disjoint, row 3 single-label; B: every multi-label pair shares a label;
# C: a row of zeros; D: two single-label samples of different classes (K = 2)
FIXTURES = {
    "A": dict(
        labels=[[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 0]],
        proxy_image=(0.713779164512, 0.256078792211, 0.247792935266),
        proxy_text=(0.69221403279, 0.490231983828, 0.354465717376),
        negative=(0.401849789833, 0.399034647791, 0.390909090909),
        pairwise=(0.693078005954, 0.01046894239, 0.65195195237),
        total=3.775772393843,
        grad_x=[[-0.372098631089, 0.548518822634, -0.303146783317],
                [0.580917230175, -0.072416134815, -0.16574947267],
                [-0.121659593524, -0.035262426194, 0.037321512633],
                [0.022297448992, -0.273607800025, 0.090397478393]],
        grad_y=[[0.002005654837, 0.641934279225, 0.156973673842],
                [0.736801962968, -0.385618779834, -0.106720398164],
                [-0.228280794939, 0.211378821031, -0.02430960589],
                [-0.02363201544, -0.004263633289, 0.022982087341]],
        grad_proxies=[[0.0, 0.004923417002, -0.36894466596],
                      [-0.328386969719, 0.0, -0.316682188419],
                      [-0.095964506546, -0.478285377647, 0.0],
                      [0.173980811913, -0.42182116258, 0.2974084208]],
    ),
    "B": dict(
        labels=[[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 1], [0, 0, 0, 1]],
        proxy_image=(0.821184020394, 0.272954240042, 0.356932955302),
        proxy_text=(0.63794136218, 0.554792725245, 0.210663364054),
        negative=(0.0, 0.0, 0.0),
        pairwise=(0.476276156207, 0.116651232422, 0.495341285422),
        total=2.908882100919,
        grad_x=[[0.039137377617, -0.056741829004, 0.034263626767],
                [0.069970032652, -0.12631778131, -0.15435889759],
                [-0.317837565278, -0.34835065346, -0.073314986335],
                [-0.067562094806, -0.050785126667, -0.097942326356]],
        grad_y=[[-0.128329204255, -0.227555896006, 0.167687133446],
                [0.168809978181, -0.058261723408, -0.159847190115],
                [-0.310968321651, -0.263880389286, 0.104841137528],
                [-0.094635057669, -0.094288247049, -0.062396417205]],
        grad_proxies=[[0.0, -0.024196714498, -0.220987419617],
                      [-0.651568828614, 0.0, -0.354589973874],
                      [0.054487082563, -0.562054381212, 0.0],
                      [0.168495636241, 0.306390599307, -0.569863482658]],
    ),
    "C": dict(
        labels=[[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]],
        proxy_image=(1.019493873805, 0.323859118603, 0.389011198728),
        proxy_text=(0.529720421594, 0.45303754659, 0.126837976942),
        negative=(0.401849789833, 0.399034647791, 0.390909090909),
        pairwise=(0.592394359574, 0.0, 0.828919352038),
        total=3.86646064467,
        grad_x=[[-0.361912364177, 0.521074610882, -0.325919111594],
                [0.550646217687, -0.134865079006, -0.232795264248],
                [0.121837638089, 0.158202813118, 0.044549723034],
                [-0.091746087146, 0.045856881522, -0.155965115739]],
        grad_y=[[-0.012700492365, 0.542739688129, 0.157910783672],
                [0.727911556567, -0.369542378053, -0.156838190178],
                [0.149326554241, 0.122538706985, -0.049300496026],
                [-0.203044264266, -0.027126053098, 0.216473579491]],
        grad_proxies=[[0.0, 0.136042349294, -0.19894931436],
                      [-0.541894107119, 0.0, -0.022070709112],
                      [-0.013222803003, -0.627106433439, 0.0],
                      [0.161087308419, -0.435549437052, 0.32935455436]],
    ),
    "D": dict(
        labels=[[1, 0], [0, 1]],
        proxy_image=(0.988622804765, 0.241732010352, 0.958365218315),
        proxy_text=(0.158353079315, 0.353553390593, 0.021588373432),
        negative=(0.0, 0.0, 0.0),
        pairwise=(0.0, 0.0, 1.082650919784),
        total=2.776347422762,
        grad_x=[[-0.110843292678, 0.554216463389],
                [0.047827970934, 0.01434839128]],
        grad_y=[[-0.824527676685, 0.824527676685],
                [-0.119505382629, -0.026556751695]],
        grad_proxies=[[0.0, -1.035982212781],
                      [0.529929268851, 0.0]],
    ),
}
INPUTS = {"A": (P, X, Y), "B": (P, X, Y), "C": (P, X, Y), "D": (P2, X2, Y2)}


def t(values, requires_grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)


def make_loss(proxies, **kwargs):
    loss = DCGHLoss(len(proxies), len(proxies[0]), **kwargs).double()
    with torch.no_grad():
        loss.proxies.copy_(t(proxies))
    return loss


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_reference_terms(name):
    case, (proxies, x, y) = FIXTURES[name], INPUTS[name]
    labels = t(case["labels"])
    for codes, expected in ((x, case["proxy_image"]), (y, case["proxy_text"])):
        assert [v.item() for v in proxy_terms(t(codes), t(proxies), labels, 0.0)] == pytest.approx(expected, abs=1e-10)
    negative = negative_pair_terms(t(x), t(y), labels, 0.0)
    assert [v.item() for v in negative] == pytest.approx(case["negative"], abs=1e-10)
    label_cosine = cosine(labels, labels)
    pairwise = [pairwise_term(t(a), t(b), label_cosine).item() for a, b in ((x, x), (y, y), (x, y))]
    assert pairwise == pytest.approx(case["pairwise"], abs=1e-10)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_reference_total_and_gradients(name):
    case, (proxies, x, y) = FIXTURES[name], INPUTS[name]
    loss = make_loss(proxies)
    x, y = t(x, True), t(y, True)
    out = loss(x, y, t(case["labels"]))
    assert out["loss"].dtype == torch.float64
    assert out["loss"].item() == pytest.approx(case["total"], abs=1e-10)
    out["loss"].backward()
    for grad, expected in ((x.grad, case["grad_x"]), (y.grad, case["grad_y"]), (loss.proxies.grad, case["grad_proxies"])):
        assert torch.allclose(grad, t(expected), atol=1e-10, rtol=0)


def test_terms_add_up_with_the_weights():
    case = FIXTURES["A"]
    loss = make_loss(P, pair_weight=0.3, negative_weight=2.0, variance_weight=0.5)
    out = loss(t(X), t(Y), t(case["labels"]))
    expected = (sum(case["proxy_image"][:2]) + sum(case["proxy_text"][:2]) + 2.0 * sum(case["negative"])
                + 0.3 * sum(case["pairwise"]) + 0.5 * (case["proxy_image"][2] + case["proxy_text"][2]))
    assert out["loss"].item() == pytest.approx(expected, abs=1e-10)
    assert out["variance"].item() == pytest.approx(case["proxy_image"][2] + case["proxy_text"][2], abs=1e-10)


def test_threshold_moves_the_hinges():
    labels = t(FIXTURES["A"]["labels"])
    _, push_0, _ = proxy_terms(t(X), t(P), labels, 0.0)
    _, push_1, _ = proxy_terms(t(X), t(P), labels, 1.0)
    _, push_low, _ = proxy_terms(t(X), t(P), labels, -1.0)
    assert push_1.item() == 0 and push_low.item() > push_0.item() > 0
    assert sum(negative_pair_terms(t(X), t(Y), labels, 1.0)).item() == 0


def test_invariant_to_positive_rescaling():
    labels = t(FIXTURES["A"]["labels"])
    base = make_loss(P)(t(X), t(Y), labels)["loss"].item()
    scaled = make_loss([[3 * v for v in r] for r in P])(2 * t(X), 0.5 * t(Y), labels)["loss"].item()
    assert scaled == pytest.approx(base, abs=1e-12)


def test_single_sample_and_unlabelled_batches_are_finite():
    loss = make_loss(P)
    x, y = t([X[0]], True), t([Y[0]], True)
    out = loss(x, y, t([[1, 0, 1, 0]]))
    # the only pair is (0, 0): label cosine 1, code cosine 1 within a modality, cos(x_0, y_0) across
    assert out["pairwise"].item() == pytest.approx(1 - cosine(x, y).item(), abs=1e-12)
    assert out["negative_pairs"].item() == 0
    out["loss"].backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(loss.proxies.grad).all()
    empty = loss(t(X), t(Y), torch.zeros(4, 4, dtype=torch.float64))
    assert all(torch.isfinite(v) for v in empty.values())
    assert empty["pairwise"].item() == 0 and empty["negative_pairs"].item() == 0


def test_bf16_inputs_are_computed_in_float32():
    labels = t(FIXTURES["A"]["labels"]).float()
    loss = make_loss(P).float()
    x, y = t(X).float(), t(Y).float()
    full = loss(x, y, labels)["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(x.bfloat16(), y.bfloat16(), labels)["loss"]
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(full.item(), abs=2e-2)


def test_proxy_init_is_tanh_of_kaiming_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = DCGHLoss(80, 64)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(a.proxies, DCGHLoss(80, 64).proxies)
    assert not torch.equal(a.proxies, DCGHLoss(80, 64, proxy_seed=1).proxies)
    assert a.proxies.abs().max().item() < 1
    raw = torch.atanh(a.proxies.detach())
    assert raw.std().item() == pytest.approx(math.sqrt(2 / 80), rel=0.15)


def test_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        DCGHLoss(1, 16)


# ------------------------------------------------------------------ the trainer
def dcgh_trainer(**options):
    return build_trainer(Trainer, num_classes=4, output_dim=8, **options)


def test_proxies_have_their_own_sgd():
    trainer = dcgh_trainer()
    bert, sgd = trainer.optimizers
    proxies = trainer.criterion.proxies
    assert all(p is not proxies for group in bert.param_groups for p in group["params"])
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["params"] == [proxies]
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.02, 0.9, 5e-4)


@pytest.mark.parametrize("proxy_lr", [0.0, 0.02])
def test_step_moves_heads_and_only_sgd_moves_proxies(proxy_lr):
    trainer = dcgh_trainer(proxy_lr=proxy_lr)
    proxies, head = trainer.criterion.proxies.detach().clone(), trainer.model.image_head.fc.weight.detach().clone()
    for step in range(2):  # BertAdam's first step has learning rate 0 (warmup)
        trainer.optimization_step(stub_batch(trainer, seed=step))
    assert not torch.equal(trainer.model.image_head.fc.weight, head)
    assert torch.equal(trainer.criterion.proxies, proxies) == (proxy_lr == 0)


def test_trainer_loss_is_the_configured_loss():
    trainer = dcgh_trainer(pair_weight=0.3, negative_weight=2.0, variance_weight=0.5, threshold=0.1)
    trainer.model.eval()
    batch = stub_batch(trainer, rows=6)
    image, text = trainer.model(batch["image"], batch["text"])
    reference = DCGHLoss(4, 8, threshold=0.1, pair_weight=0.3, negative_weight=2.0, variance_weight=0.5)
    reference.load_state_dict(trainer.criterion.state_dict())
    expected = reference(image, text, batch["label"])["loss"]
    assert trainer.training_step(batch)["loss"].item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("option, value", [("threshold", 1.0), ("pair_weight", -1.0), ("proxy_lr", -0.1)])
def test_config_refuses_bad_values(option, value):
    with pytest.raises(UserError, match=option.replace("_", "-")):
        DCGHConfig(**{option: value})
