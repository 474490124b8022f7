"""DSSH: reference fixtures (a full training step: vMF terms, similarity cross-entropies, total, vMF samples,
gradients for the codes, proxies and temperature) and properties of the sampler and the loss.

The fixtures were computed by the reference code (QinLab-WFU/DSSH @3c17ffb: main.py `run` for one step with the real
VMFSoftmax and VonMisesFisher) on CPU in float64 with injected random draws; README.md, "How the fixtures were
produced".
"""
import math

import pytest
import scipy.special
import torch

from train.common import label_overlap
from train.DSSH import Trainer, vmf
from train.DSSH.loss import DSSHLoss, VMFProxyLoss, fill_empty_labels, proxy_init_std, similarity_cross_entropy
from train.DSSH.trainer import DSSHConfig
from train.testing import build_trainer, stub_batch
from utils.errors import UserError


def wave(shape, scale, offset):
    """sin(scale · arange(n) + offset) reshaped: the fixture's deterministic inputs."""
    return torch.sin(scale * torch.arange(math.prod(shape), dtype=torch.float64) + offset).reshape(shape)


def case_inputs(name):
    """(image, text, labels, proxies, temperature, samples, draws) of fixture case A or B."""
    if name == "A":  # B = 4, K = 6, C = 3, tanh codes
        b, k, c, n = 4, 6, 3, 3
        image, text = torch.tanh(1.5 * wave((b, k), 0.9, 0.1)), torch.tanh(1.5 * wave((b, k), 0.7, 1.3))
        labels = [[1, 0, 0], [0, 1, 1], [1, 1, 0], [1, 0, 1]]
        proxies, temperature = 2.0 * wave((c, k), 1.1, 0.4), 0.3
        draws = [(0.5 + 0.45 * wave((n, b), 0.8, 0.3 + i), wave((n, b, k), 0.61, 2.0 + i)[..., 1:]) for i in range(3)]
    else:  # B = 3, K = 4, C = 4, raw embeddings of norms 3, 10.5, 12 (the sampler's blend of b)
        b, k, c, n = 3, 4, 4, 2
        norms = torch.tensor([[3.0], [10.5], [12.0]], dtype=torch.float64)
        image = torch.nn.functional.normalize(wave((b, k), 1.3, 0.2), dim=1) * norms
        text = torch.nn.functional.normalize(wave((b, k), 0.5, 2.2), dim=1) * norms.flip(0)
        labels = [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1]]
        proxies, temperature = 5.0 * wave((c, k), 0.45, 1.0), -0.2
        draws = [(0.5 + 0.4 * wave((n, b), 1.7, 0.9 + i), wave((n, b, k), 0.83, 0.5 + i)[..., 1:]) for i in range(3)]
    return image, text, torch.tensor(labels, dtype=torch.float64), proxies, temperature, n, draws


FIXTURES = {
    "A": dict(
        vmf=(1.2102083146520344, 1.1335977281657652, 1.128452766556711),
        cross_entropy=(12.497509377027455, 9.739766839652141, 10.929572943771788),
        total=36.63910796982589,
        z_image=[[[0.573018815824, 0.040842852593, -0.34239566569, -0.555263918394, -0.392624982463,
                -0.300456503168], [0.671991654197, -0.099668259225, -0.197514684058, -0.039774476209, 0.2158943936,
                0.67178047473], [0.043752704264, 0.018967899912, -0.438683666867, -0.668054579879, -0.562664563326,
                -0.205898585584], [-0.452394296713, 0.398163143036, 0.509301747661, 0.525921206251, 0.311174052918,
                -0.063204709202]], [[-0.735066021388, 0.177512034942, 0.294660258541, 0.188131747687,
                -0.425149694353, -0.353831791381], [-0.294689073219, 0.328306100446, 0.541279830483, 0.393126150001,
                0.027956818863, -0.597544848619], [-0.137554074226, -0.444075449763, 0.089450844643, 0.495983456298,
                0.596771827016, 0.416819164067], [-0.563787566064, -0.391957548473, -0.62097255004, -0.360322382056,
                -0.093815628035, 0.065363304458]], [[0.3322943007, 0.074159825153, 0.330592506662, 0.502841129424,
                0.624799459714, 0.362720066022], [-0.187105786571, -0.400228432756, -0.619745372391, -0.540987331597,
                -0.233209841069, 0.271422505929], [0.136763625651, 0.709220880356, 0.348191152623, -0.065958864643,
                -0.359275281762, -0.472900702993], [0.89071888792, -0.275916901227, -0.053664121027, -0.00426209944,
                0.136468290842, 0.330103208917]]],
        grad_image=[[0.922134303113, 1.878671688309, 1.539286607058, 0.205721859464, -1.328137366828,
                   -1.856094581363], [0.091059390694, 0.911760760993, 1.170152435153, 0.610065168037,
                   -0.263423700835, -0.831029236505], [-1.473268409231, -1.188394985395, 0.051393979796,
                   1.344401902795, 2.051911570739, 1.570518111385], [-1.467261621953, -2.468095350943,
                   -2.107299204209, -0.228074135948, 1.714143413419, 2.69188979936]],
        grad_text=[[1.179303437138, 1.583457786534, 1.180607756234, -0.019531901663, -1.030895791952,
                  -1.514245339259], [-2.170360491691, -0.985493766697, 1.070931137782, 2.455640135657,
                  2.351272050812, 0.963482051609], [-0.93421228522, -2.401722135484, -2.998509964812,
                  -1.621703191944, 0.489810451422, 2.312519304004], [1.950342431234, 1.849665957296, 0.812712134537,
                  -0.770359139719, -1.818275103617, -1.808476628537]],
        grad_proxies=[[-0.003869337325, -0.006640552008, -0.007206389075, -0.000365069532, 0.007453773155,
                     0.007614095336], [0.007877088124, -0.004913301063, -0.010018083433, -0.003984370386,
                     -0.000801559767, -0.002031339101], [0.003203076234, -0.010395843027, -0.012059755735,
                     -0.005465298057, -0.000290136142, 0.003483750991]],
        grad_temperature=-0.286516248613,
    ),
    "B": dict(
        vmf=(1.4340534580142237, 1.4228581787865664, 1.3788507585338132),
        cross_entropy=(78.13539181454024, 66.98349611251135, 58.892444125543584),
        total=208.24709444792978,
        z_image=[[[0.645543789852, 0.181695204058, 0.453463655327, 0.587052622432], [-0.89488517047, -0.263795756722,
                0.342621104091, 0.110467685051], [-0.625862487598, -0.23381169818, 0.479108759471, 0.569282911222]],
                [[-0.520941672064, 0.516095146976, 0.106683386187, -0.67147913496], [0.238465539743, 0.807342334967,
                0.241971600862, -0.482475165061], [-0.204653364532, -0.63252493407, 0.21642482786, 0.714975175829]]],
        grad_image=[[5.501742186721, 5.44882977747, -1.053926552649, -7.09219087942], [1.907837846469,
                   3.199880871382, 2.713014510824, 1.244880661494], [-8.43736012384, -6.389827546286, 2.888493871849,
                   8.369311372386]],
        grad_text=[[8.727022985249, 4.919906321289, -2.919516072131, -8.507367937809], [1.577703545036,
                  -1.370703508872, -2.312433149623, 0.155513161359], [-10.261999047964, -3.531767152383,
                  5.227804228154, 8.327743129929]],
        grad_proxies=[[-0.042349063392, -0.02672567331, 0.014749920951, 0.040387446016], [0.076220745118,
                     0.027370577309, -0.00429480936, 0.025536863161], [-0.019013457753, -0.00492945151,
                     -0.027158886295, -0.031964397575], [-0.048058139834, -0.035962765222, -0.031076176063,
                     -0.003029386252]],
        grad_temperature=-0.659721263069,
    ),
}


def make_loss(proxies, temperature, samples):
    loss = DSSHLoss(proxies.shape[0], proxies.shape[1], samples).double()
    with torch.no_grad():
        loss.vmf.proxies.copy_(proxies)
        loss.vmf.temperature.fill_(temperature)
    return loss


def t(values):
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_reference_step(name):
    case = FIXTURES[name]
    image, text, labels, proxies, temperature, samples, draws = case_inputs(name)
    loss = make_loss(proxies, temperature, samples)
    image, text = image.requires_grad_(), text.requires_grad_()
    out = loss(image, text, labels, noise=tuple(draws))
    assert [out[k].item() for k in ("vmf_image", "vmf_text", "vmf_mean")] == pytest.approx(case["vmf"], abs=1e-10)
    assert out["similarity"].item() == pytest.approx(sum(case["cross_entropy"]), abs=1e-9)
    assert out["loss"].item() == pytest.approx(case["total"], abs=1e-9)
    overlap = label_overlap(labels)
    parts = [similarity_cross_entropy(a, b, overlap).item() for a, b in ((image, text), (image, image), (text, text))]
    assert parts == pytest.approx(case["cross_entropy"], abs=1e-9)
    out["loss"].backward()
    assert torch.allclose(image.grad, t(case["grad_image"]), atol=1e-9, rtol=0)
    assert torch.allclose(text.grad, t(case["grad_text"]), atol=1e-9, rtol=0)
    assert torch.allclose(loss.vmf.proxies.grad, t(case["grad_proxies"]), atol=1e-9, rtol=0)
    assert loss.vmf.temperature.grad.item() == pytest.approx(case["grad_temperature"], abs=1e-9)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_reference_samples(name):
    image, _, _, _, _, _, draws = case_inputs(name)
    kappa = image.norm(dim=1, keepdim=True)
    z = vmf.rsample(image / kappa, kappa, *draws[0])
    assert torch.allclose(z, t(FIXTURES[name]["z_image"]), atol=1e-10, rtol=0)
    assert torch.allclose(z.norm(dim=2), torch.ones(z.shape[:2], dtype=torch.float64), atol=1e-12)


def test_rsample_gradients_match_finite_differences():
    image, _, _, _, _, _, draws = case_inputs("B")
    e, v = draws[0]

    def f(x):
        kappa = x.norm(dim=1, keepdim=True)
        return (vmf.rsample(x / kappa, kappa, e, v) * wave((2, 3, 4), 0.3, 0.0)).sum()

    assert torch.autograd.gradcheck(f, (image.clone().requires_grad_(),))


def test_sampler_statistics():
    dim, samples = 8, 4000
    kappa = torch.tensor([[2.0], [10.5], [40.0]], dtype=torch.float64)
    mu = torch.nn.functional.normalize(wave((3, dim), 0.7, 0.1), dim=1)
    e, v = vmf.draw_noise(kappa, dim, samples, torch.Generator().manual_seed(0))
    assert e.shape == (samples, 3) and v.shape == (samples, 3, dim - 1) and ((e > 0) & (e < 1)).all()
    z = vmf.rsample(mu, kappa, e, v)
    mean = z.mean(dim=0)
    # E[z] = A_d(κ) μ; the approximation of A_d is within 1e-2 here, the Monte-Carlo error about 0.01
    expected = vmf.expected_direction(mu * kappa)
    assert torch.allclose(mean, expected, atol=0.03)
    again = vmf.draw_noise(kappa, dim, samples, torch.Generator().manual_seed(0))
    assert torch.equal(e, again[0]) and torch.equal(v, again[1])


def test_bessel_ratio_and_log_normalizer_against_scipy():
    dim = 16
    kappa = torch.tensor([0.5, 3.0, 20.0, 80.0], dtype=torch.float64)
    exact = [scipy.special.ive(dim / 2, k) / scipy.special.ive(dim / 2 - 1, k) for k in kappa.tolist()]
    # the approximation (the mean of two bounds of the ratio) is within 4 % at small κ, 0.3 % from κ = 20
    assert vmf.bessel_ratio(kappa, dim).tolist() == pytest.approx(exact, rel=4e-2)
    assert vmf.bessel_ratio(kappa[2:], dim).tolist() == pytest.approx(exact[2:], rel=3e-3)
    # d/dκ log C_d(κ) = -A_d(κ): the approximations are consistent (log_normalizer takes κ²)
    k = kappa.clone().requires_grad_()
    vmf.log_normalizer(k ** 2, dim).sum().backward()
    assert k.grad.tolist() == pytest.approx((-vmf.bessel_ratio(kappa, dim)).tolist(), rel=4e-2)


def test_wood_b_blends_between_10_and_11():
    kappa = torch.tensor([9.0, 10.0, 10.5, 11.0, 30.0], dtype=torch.float64)
    dim = 6
    exact = (-2 * kappa + torch.sqrt(4 * kappa ** 2 + (dim - 1) ** 2)) / (dim - 1)
    b = vmf.wood_b(kappa, dim)
    assert b[0] == exact[0] and b[1] == exact[1]
    assert b[2] == pytest.approx(0.5 * (exact[2] + (dim - 1) / (4 * 10.5)))
    assert b[3] == pytest.approx((dim - 1) / 44) and b[4] == pytest.approx((dim - 1) / 120)


def test_proxy_init_and_global_rng():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    loss = VMFProxyLoss(80, 64, 10)
    assert torch.equal(torch.rand(3), expected)
    assert loss.proxies.std().item() == pytest.approx(proxy_init_std(0.7, 64), rel=0.05)
    assert proxy_init_std(0.7, 64) == pytest.approx(0.7 / 0.51 * 63 / 8)
    assert torch.equal(loss.proxies, VMFProxyLoss(80, 64, 10).proxies) and loss.temperature.item() == 0


def test_drawn_noise_is_reproducible_and_used():
    image, text, labels, proxies, temperature, _, _ = case_inputs("A")
    loss = make_loss(proxies, temperature, 50)
    first = loss(image, text, labels, generator=torch.Generator().manual_seed(1))["loss"]
    second = loss(image, text, labels, generator=torch.Generator().manual_seed(1))["loss"]
    third = loss(image, text, labels, generator=torch.Generator().manual_seed(2))["loss"]
    assert first.item() == second.item() != third.item()


def test_single_sample_and_bf16():
    image, text, labels, proxies, temperature, samples, draws = case_inputs("A")
    loss = make_loss(proxies, temperature, samples).float()
    one = loss(image[:1].float().requires_grad_(), text[:1].float(), labels[:1].float(),
               generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in one.values())
    noise = tuple((e.float(), v.float()) for e, v in draws)
    full = loss(image.float(), text.float(), labels.float(), noise=noise)["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(image.bfloat16(), text.bfloat16(), labels.float(), noise=noise)["loss"]
    assert low.dtype == torch.float32 and low.item() == pytest.approx(full.item(), rel=2e-2)


def test_fill_empty_labels():
    labels = t([[0, 0, 0], [1, 0, 1], [0, 0, 0]])
    filled = fill_empty_labels(labels, torch.Generator().manual_seed(0))
    assert filled.sum(dim=1).tolist() == [1, 2, 1] and torch.equal(filled[1], labels[1])
    assert not labels[0].any()  # the input is not modified
    assert torch.equal(fill_empty_labels(labels[1:2]), labels[1:2])


# ------------------------------------------------------------------ the trainer
def dssh_trainer(**options):
    return build_trainer(Trainer, num_classes=3, num_train=40, steps_per_epoch=5, output_dim=8, epochs=4,
                         **{"samples": 4, **options})


def test_four_bertadam_groups_with_their_rates():
    trainer = dssh_trainer()
    assert len(trainer.optimizers) == 1
    groups = trainer.optimizer.param_groups
    vmf_loss = trainer.criterion.vmf
    assert [g["lr"] for g in groups] == [1e-3, 0.1, 1e-2, 1e-3]
    assert groups[2]["params"] == [vmf_loss.proxies] and groups[3]["params"] == [vmf_loss.temperature]
    assert all(g["weight_decay"] == 0.2 for g in groups)  # on every group, proxies and temperature included


@pytest.mark.parametrize("unit, t_total", [("samples", 40 * 4), ("steps", 5 * 4)])
def test_schedule_counts_samples_or_steps(unit, t_total):
    trainer = dssh_trainer(schedule_unit=unit)
    assert {g["t_total"] for g in trainer.optimizer.param_groups} == {t_total}


@pytest.mark.parametrize("decay", [0.01, 0.0])
def test_epoch_end_decays_every_learning_rate(decay):
    trainer = dssh_trainer(epoch_lr_decay=decay)
    trainer.on_epoch_end(0)
    trainer.on_epoch_end(1)
    expected = [lr * math.exp(-2 * decay) for lr in (1e-3, 0.1, 1e-2, 1e-3)]
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx(expected, rel=1e-12)


def test_samples_default_to_the_training_set_size():
    assert dssh_trainer(samples=None).criterion.vmf.samples == 40


def test_step_draws_depend_on_the_step_and_fill_unlabelled_rows():
    trainer = dssh_trainer()
    trainer.model.eval()
    batch = stub_batch(trainer, rows=5)
    batch["label"][1:3] = 0  # two unlabelled rows: the proxy target would be 0 / 0 without the fill
    first = trainer.training_step(batch)["loss"]
    again = trainer.training_step(batch)["loss"]
    trainer.global_step += 1
    later = trainer.training_step(batch)["loss"]
    assert torch.isfinite(first) and first.item() == again.item() != later.item()
    first.backward()
    assert torch.isfinite(trainer.criterion.vmf.proxies.grad).all()


def test_one_optimization_step_moves_everything():
    trainer = dssh_trainer(warmup_proportion=0.01, schedule_unit="steps")
    before = [p.detach().clone() for g in trainer.optimizer.param_groups for p in g["params"]]
    for step in range(2):  # BertAdam's first step has learning rate 0 (warmup)
        trainer.optimization_step(stub_batch(trainer, seed=step))
        trainer.global_step += 1
    after = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    assert all(not torch.equal(a, b) for a, b in zip(after, before))


@pytest.mark.parametrize("options, flag", [(dict(samples=0), "--samples"), (dict(kappa_confidence=1.0), "--kappa"),
                                           (dict(proxy_lr=-1.0), "--proxy-lr")])
def test_config_refuses_bad_values(options, flag):
    with pytest.raises(UserError, match=flag):
        DSSHConfig(**options)


def test_early_stop_counts_evaluations_without_a_gain_in_either_direction():
    from train.DSSH import Trainer
    from train.testing import build_trainer

    trainer = build_trainer(Trainer, num_classes=3, output_dim=8, patience=2, samples=4)
    maps = [(0.5, 0.5), (0.6, 0.4), (0.55, 0.45), (0.58, 0.49), (0.59, 0.50)]
    stops = []
    for epoch, (i2t, t2i) in enumerate(maps, start=1):
        results = {"8": {d: {"mAP": v} for d, v in (("i2t", i2t), ("t2i", t2i), ("i2i", 0.0), ("t2t", 0.0))}}
        trainer.history.add(epoch, results, i2t + t2i)
        stops.append(trainer.should_stop())
    assert stops == [False, False, False, True, True]  # I->T's best at epoch 2, T->I's at 1: two evaluations after 2
