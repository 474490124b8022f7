"""RSH: reference fixtures (QinLab-WFU/RSH @fda3a92, float64 on CPU; README "How the fixtures were produced")
and properties of the self-reflective similarity, the triplet terms and the quantization term."""
import pytest
import torch

from model.clip import build_tiny_clip
from train.RSH.loss import quantization_loss, rsh_loss, self_reflective_similarity, triplet_loss, triplet_mask
from train.RSH.model import RSHModel
from train.RSH.trainer import RSHConfig, Trainer
from train.testing import build_trainer, stub_batch
from utils.errors import UserError

# hand-made inputs: image / text tanh codes, image / text uncertainties, labels
CASES = {
    "multi_label": dict(  # samples 0-1, 1-3 and 2-3 share no label
        img=[[0.5, -0.2, 0.1, 0.7], [-0.3, 0.8, -0.5, 0.2], [0.6, 0.1, -0.4, -0.2], [0.2, -0.6, 0.3, 0.9]],
        txt=[[0.4, -0.1, 0.3, 0.5], [-0.6, 0.7, -0.2, -0.1], [0.3, 0.4, -0.6, 0.1], [-0.1, -0.5, 0.6, 0.4]],
        img_u=[[0.3, -1.2, 0.5, 0.8], [1.1, 0.2, -0.7, 0.4], [-0.5, 0.9, 0.3, -1.0], [0.6, -0.4, 1.3, 0.2]],
        txt_u=[[-0.2, 0.7, 1.0, -0.6], [0.4, -0.9, 0.2, 1.2], [0.8, 0.3, -1.1, 0.5], [-1.3, 0.6, 0.4, -0.3]],
        labels=[[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]),
    "single_label": dict(
        img=[[0.9, -0.3, 0.2], [-0.4, 0.6, 0.5], [0.7, -0.1, 0.4], [0.1, 0.2, -0.8], [-0.5, 0.7, 0.3]],
        txt=[[0.8, -0.2, 0.1], [-0.3, 0.5, 0.6], [0.2, 0.3, 0.4], [-0.2, 0.1, -0.9], [0.6, -0.4, 0.2]],
        img_u=[[0.5, 0.1, -0.3], [-0.8, 0.4, 0.9], [0.2, -0.6, 0.7], [1.0, 0.3, -0.2], [-0.4, -0.7, 0.1]],
        txt_u=[[0.3, -0.5, 0.6], [0.7, 0.2, -0.4], [-0.9, 0.8, 0.1], [0.4, -0.1, 0.5], [-0.2, 0.6, -0.8]],
        labels=[[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]]),
    "no_shared_label": dict(  # only the cross-modal terms have triplets (a, a, n)
        img=[[0.5, -0.5], [0.3, 0.9], [-0.7, 0.2]],
        txt=[[0.6, -0.2], [-0.1, 0.8], [-0.4, -0.6]],
        img_u=[[0.2, 0.4], [-0.6, 0.1], [0.9, -0.3]],
        txt_u=[[-0.5, 0.3], [0.7, 0.6], [0.1, -0.8]],
        labels=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
    "zero_label_row": dict(
        img=[[0.4, 0.2, -0.6], [-0.2, 0.5, 0.3], [0.7, -0.3, 0.1]],
        txt=[[0.3, 0.1, -0.5], [0.6, 0.4, -0.2], [0.2, -0.7, 0.4]],
        img_u=[[0.1, -0.2, 0.3], [0.5, 0.6, -0.4], [-0.7, 0.2, 0.8]],
        txt_u=[[0.4, 0.3, -0.1], [-0.6, 0.9, 0.2], [0.3, -0.5, -0.2]],
        labels=[[1, 0], [0, 0], [1, 0]]),
}

# (case, γ, τ): reference terms (image_image, image_text, text_image, text_text), quantization, total
REFERENCE_VALUES = {
    ('multi_label', 0.0, 5.0): ([0.0396651390753, 0.21905556926, 0.238627956376, 0],
        1.21875, 0.16089966617776424),
    ('multi_label', 3.0, 9.0): ([0.0212672748044, 0.0824111735699, 0.0972534684277, 0],
        1.21875, 0.08679547920049602),
    ('no_shared_label', 0.0, 5.0): ([0, 0.337600895713, 0.0473610275261, 0],
        1.0333333333333332, 0.12724048080969774),
    ('no_shared_label', 3.0, 9.0): ([0, 0.324020817318, 0.113979046062, 0],
        1.0333333333333332, 0.14049996584487381),
    ('single_label', 0.0, 5.0): ([0, 0.596346074397, 0.945051472068, 0.598198261744],
        1.1666666666666667, 0.5698989520523186),
    ('single_label', 3.0, 9.0): ([0, 0.558517075148, 0.862683863134, 0.570045471057],
        1.1666666666666667, 0.5328116023347202),
    ('zero_label_row', 0.0, 5.0): ([0, 0.56981469909, 0.23775366319, 0.79780282801],
        1.2555555555555555, 0.43900946423917064),
    ('zero_label_row', 3.0, 9.0): ([0, 0.521321836202, 0.225320321295, 0.740122958835],
        1.2555555555555555, 0.4093579457497522),
}

# reference gradients of the total w.r.t. image, text, image uncertainty, text uncertainty
REFERENCE_GRADIENTS = {
    ('multi_label', 3.0, 9.0): (
        [[-0.0707812172025, 0.241090708789, -0.126250115068, 0.133458945523],
         [-0.0646411258661, -0.0224282772734, 0.0998817955212, 0.225580909097],
         [0.45013936644, -0.795116474955, 0.421727448771, 0.121592464299],
         [-0.049253696048, 0.0384791290549, -0.00578631541529, 0.0343601236301]],
        [[-0.001875, 0.001875, -0.001875, -0.001875],
         [-0.295166780121, -0.133984133736, 0.284600976254, 0.293909792068],
         [-0.001875, -0.001875, 0.001875, -0.001875],
         [0.170696125215, -0.0525449302031, -0.0233251845435, 0.00448064536512]],
        [[0.0121344862706, -0.0131724654357, 0.000519009733119, 0.0143428581213],
         [0.00472571376203, -0.0172290230483, 0.00217328123271, 0.0141494320047],
         [-0.0106392186131, -0.000387574520166, -0.0233877273009, -0.0154602619177],
         [0.00338730952215, -0.00440349458799, 0.00508096258957, 0.00474223197608]],
        [[0, 0, 0, 0],
         [0.0116550644691, -0.0103163574162, -0.0244325677141, -0.00222034928441],
         [0, 0, 0, 0],
         [-0.0114982010514, 0.00958184592068, 0.00447153150319, -0.00830425454052]],
    ),
    ('single_label', 0.0, 5.0): (
        [[-0.0121482883711, -0.0563958016942, -0.0439264048711],
         [-0.0192947966102, 0.0415792754504, -0.0713309678287],
         [0.0119257194331, -0.0944983562539, -0.0504945980715],
         [0.0434799641206, -0.02726663833, 0.00136833593257],
         [-0.00428381075382, 0.0150418879545, -0.0522374231502]],
        [[-0.00889462039352, -0.0316613516832, -0.0141657402183],
         [-0.0659172428274, 0.0686762612933, -0.0948555058248],
         [-0.46462217607, 0.236086747413, 0.0507460274753],
         [-0.0164631856331, 0.0365910359993, 0.0103908230295],
         [0.0757516155075, -0.0878729188289, -0.41500068418]],
        [[0.00299134247534, -0.0058570204492, 0.000638083986357],
         [0.00992609538403, -0.0125535630205, 0.00652221737843],
         [0.00310936773305, -0.000683510056846, -0.00828008579872],
         [0.00337721166578, 0.00379936259631, -0.00422150508383],
         [0.00978210549727, -0.00238932086204, 0.022843011437]],
        [[0.00824915764351, -0.00602191885552, -0.00201118191492],
         [-6.85504410004e-05, -0.0103180571634, 0.0185613150274],
         [-0.00161251689145, -0.00026894643083, -0.00806126441957],
         [0.00488189847414, 0.00226913081663, 0.00297509641565],
         [0.0261649758797, -0.0124948638258, 0.0204061735329]],
    ),
    ('zero_label_row', 3.0, 9.0): (
        [[-0.14270953754, 0.295865312687, 0.0101487458691],
         [0.0280351157009, -0.150420897235, 0.258280461415],
         [0.0429339924733, 0.109339568114, -0.00918590963653]],
        [[-0.175137468902, 0.380359778008, -0.0230105257398],
         [0.122784862558, -0.22026777256, -0.0521809574459],
         [-0.356331960554, 0.216896778658, 0.546902009596]],
        [[-0.0126793169281, 0.0217633093694, -0.00172178496346],
         [0.0149794201901, 0.00187244390748, -0.0112345323751],
         [-0.000759085481307, 0.0014172748514, -0.00161310389506]],
        [[-0.0157737140997, 0.00576911239366, 0.00497509538935],
         [-0.00978583025598, 0.0139242406221, 0.00344879382306],
         [-0.0173109985632, 0.0347140491695, -0.00860309887697]],
    ),
    ('no_shared_label', 3.0, 9.0): (
        [[-0.213058890711, -0.203058890711],
         [-0.005, -0.005],
         [0.21478109054, 0.729233816889]],
        [[-0.005, 0.005],
         [-0.213993718842, -0.0323742148553],
         [0.681207408315, -0.445804938877]],
        [[0.00777560421492, -0.0103674118098],
         [0, 0],
         [-0.00499222915312, 0.0176514932933]],
        [[0, 0],
         [0.00944471203598, 0.00177088830289],
         [-0.00666133697418, 0.00551319318062]],
    ),
}

# reference S(I, I) and S(I, T) of the multi-label case at γ 3, τ 9
SIMILARITY_II = [[1, 0.130989821343, 0.389531520008, 0.96216898144],
                 [0.130990082259, 1, 0.359722807455, -0.0465173715559],
                 [0.389531783345, 0.359722824039, 1, 0.0876561004594],
                 [0.962169173495, -0.0465174888737, 0.0876559633398, 1]]
SIMILARITY_IT = [[0.988308840026, -0.121127950766, 0.417403150094, 0.696204317762],
                 [-0.00493067814598, 0.952408676938, 0.864498654529, -0.311281860624],
                 [0.37556901858, 0.0124324593124, 0.871239108277, -0.155156367118],
                 [0.941866843887, -0.159500656378, 0.0512896608768, 0.923341921179]]


def tensors(name, requires_grad=False):
    case = CASES[name]
    out = {k: torch.tensor(case[k], dtype=torch.float64, requires_grad=requires_grad)
           for k in ("img", "txt", "img_u", "txt_u")}
    return out, torch.tensor(case["labels"], dtype=torch.float64)


def run(name, gamma, tau, requires_grad=False):
    x, labels = tensors(name, requires_grad)
    return x, rsh_loss(x["img"], x["img_u"], x["txt"], x["txt_u"], labels, gamma=gamma, tau=tau)


@pytest.mark.parametrize("key", sorted(REFERENCE_VALUES))
def test_reference_values(key):
    terms, quantization, total = REFERENCE_VALUES[key]
    _, out = run(*key)
    got = [out[k].item() for k in ("image_image", "image_text", "text_image", "text_text")]
    assert got == pytest.approx(terms, rel=1e-9, abs=1e-12)
    assert out["quantization"].item() == pytest.approx(quantization, rel=1e-12)
    assert out["loss"].item() == pytest.approx(total, rel=1e-9)


@pytest.mark.parametrize("key", list(REFERENCE_GRADIENTS))
def test_reference_gradients(key):
    x, out = run(*key, requires_grad=True)
    out["loss"].backward()
    for name, expected in zip(("img", "txt", "img_u", "txt_u"), REFERENCE_GRADIENTS[key]):
        torch.testing.assert_close(x[name].grad, torch.tensor(expected, dtype=torch.float64), rtol=1e-8, atol=1e-11)


def test_reference_similarity_matrices():
    x, _ = tensors("multi_label")
    intra = self_reflective_similarity(x["img"], x["img_u"], gamma=3.0, tau=9.0)
    cross = self_reflective_similarity(x["img"], x["img_u"], x["txt"], x["txt_u"], gamma=3.0, tau=9.0)
    torch.testing.assert_close(intra, torch.tensor(SIMILARITY_II, dtype=torch.float64), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(cross, torch.tensor(SIMILARITY_IT, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_similarity_formula_without_epsilon_terms():
    """S = 1 − (1 − cos)·exp(−(‖u + v‖ + γ) / (τ‖ŝ − r̂‖)) up to the ε of pairwise_distance."""
    g = torch.Generator().manual_seed(0)
    s, r, u, v = (torch.randn(5, 8, generator=g, dtype=torch.float64) for _ in range(4))
    got = self_reflective_similarity(s, u, r, v, gamma=2.0, tau=4.0)
    sn, rn = s / s.norm(dim=1, keepdim=True), r / r.norm(dim=1, keepdim=True)
    cos = sn @ rn.T
    expected = 1 - (1 - cos) * torch.exp(-(torch.cdist(u, -v) + 2.0) / (4.0 * torch.cdist(sn, rn)))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_uncertainty_weakens_the_discrepancy():
    """Orthogonal codes (1 − cos = 1, ‖ŝ − r̂‖ = √2): S = 1 − exp(−(‖u + v‖ + γ) / (τ√2)), rising."""
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    values = []
    for scale in (0.0, 1.0, 10.0):
        u = torch.full((2, 2), scale, dtype=torch.float64)
        sim = self_reflective_similarity(s, u, gamma=1.0, tau=2.0)
        expected = 1 - torch.exp(-(torch.tensor(2 * scale * 2 ** 0.5) + 1.0) / (2.0 * 2 ** 0.5)).item()
        assert sim[0, 1].item() == pytest.approx(expected, abs=1e-5)
        assert sim[0, 0].item() == 1.0  # a code with itself: ‖ŝ − ŝ + ε‖ ≈ 0, exp underflows
        values.append(sim[0, 1].item())
    assert values[0] < values[1] < values[2]


def test_triplet_masks():
    labels = torch.tensor([[1, 0], [1, 0], [0, 1]], dtype=torch.float64)
    intra = triplet_mask(labels, cross=False).nonzero().tolist()
    cross = triplet_mask(labels, cross=True).nonzero().tolist()
    assert intra == [[0, 1, 2], [1, 0, 2]]
    assert cross == [[0, 0, 2], [0, 1, 2], [1, 0, 2], [1, 1, 2], [2, 2, 0], [2, 2, 1]]


def test_triplet_loss_means_only_positive_hinges():
    sim = torch.tensor([[1.0, 0.9, 0.1], [0.9, 1.0, 0.8], [0.1, 0.8, 1.0]], dtype=torch.float64)
    valid = triplet_mask(torch.tensor([[1, 0], [1, 0], [0, 1]], dtype=torch.float64), cross=False)
    # (0,1,2): 0.1 − 0.9 + 0.25 < 0 (inactive); (1,0,2): 0.8 − 0.9 + 0.25 = 0.15
    assert triplet_loss(sim, valid, 0.25).item() == pytest.approx(0.15)
    assert triplet_loss(sim, torch.zeros_like(valid), 0.25).item() == 0.0


def test_quantization_term():
    image = torch.tensor([[0.5, -1.0], [0.0, 0.9]])
    text = torch.tensor([[-0.2, 0.7], [1.0, -1.0]])
    # |0.5−1| + 0 + |0−0| + |0.9−1| = 0.6 over 4; |−0.2+1| + |0.7−1| + 0 + 0 = 1.1 over 4
    assert quantization_loss(image, text).item() == pytest.approx(0.15 + 0.275)


def test_single_sample_and_zero_triplets_give_only_quantization():
    x, labels = tensors("multi_label")
    out = rsh_loss(x["img"][:1], x["img_u"][:1], x["txt"][:1], x["txt_u"][:1], labels[:1])
    assert out["triplet"].item() == 0.0
    assert out["loss"].item() == pytest.approx(0.03 * out["quantization"].item())


def test_invariant_to_code_scale_and_batch_order():
    x, labels = tensors("multi_label")
    base = rsh_loss(x["img"], x["img_u"], x["txt"], x["txt_u"], labels)["triplet"]
    order = torch.tensor([2, 0, 3, 1])
    permuted = rsh_loss(2 * x["img"][order], x["img_u"][order], 0.5 * x["txt"][order], x["txt_u"][order],
                        labels[order])["triplet"]
    assert permuted.item() == pytest.approx(base.item(), rel=1e-12)


def test_bf16_autocast_runs_in_float32():
    x, labels = tensors("single_label")
    inputs = [x[k].float().bfloat16() for k in ("img", "img_u", "txt", "txt_u")]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rsh_loss(*inputs[:2], *inputs[2:], labels.float())
    assert out["loss"].dtype == torch.float32
    reference = REFERENCE_VALUES[("single_label", 3.0, 9.0)][2]
    assert out["loss"].item() == pytest.approx(reference, abs=2e-2)  # inputs rounded to bf16


def test_model_outputs_and_codes():
    torch.manual_seed(0)
    model = RSHModel(build_tiny_clip(), 16).eval()
    images, texts = torch.randn(3, 3, 64, 64), torch.randint(1, 400, (3, 32))
    with torch.no_grad():
        img, img_u, txt, txt_u = model(images, texts)
        assert all(t.shape == (3, 16) for t in (img, img_u, txt, txt_u))
        assert img.abs().max() < 1 and txt.abs().max() < 1
        torch.testing.assert_close(model.encode_image(images), img)
        torch.testing.assert_close(model.encode_text(texts), txt)
        features = model.backbone.encode_image(images)
        torch.testing.assert_close(model.image_uncertainty(features), img_u)


# ---------------------------------------------------------------- trainer
def rsh_trainer(**options):
    return build_trainer(Trainer, num_classes=3, output_dim=8, **options)


def test_reference_defaults():
    cfg = RSHConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.weight_decay, cfg.head_init) == (101, 128, 1e-4, "default")
    assert (cfg.gamma, cfg.tau, cfg.margin, cfg.quantization_weight) == (3.0, 9.0, 0.25, 0.03)
    assert RSHConfig.defaults_for("demo")["epochs"] == 25 and "epochs" not in RSHConfig.defaults_for("coco")
    with pytest.raises(UserError, match="--tau"):
        RSHConfig(tau=0.0)
    with pytest.raises(UserError, match="--schedule-steps-per-epoch"):
        RSHConfig(schedule_steps_per_epoch=0)


def test_optimizer_groups_follow_the_reference():
    trainer = rsh_trainer(lr=1e-3, clip_lr=1e-5)
    model, groups = trainer.model, trainer.optimizer.param_groups
    parts = [trainer.backbone, model.image_head, model.text_head, model.image_uncertainty, model.text_uncertainty]
    assert [g["lr"] for g in groups] == [1e-5, 1e-3, 1e-3, 1e-3, 1e-3]
    for group, part in zip(groups, parts):
        assert {id(p) for p in group["params"]} == {id(p) for p in part.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(g["weight_decay"] == 1e-4 for g in groups)


@pytest.mark.parametrize("steps_per_epoch, expected", [(None, 10 * 7), (5000, 5000 * 7)])
def test_schedule_length(steps_per_epoch, expected):
    trainer = rsh_trainer(epochs=7, schedule_steps_per_epoch=steps_per_epoch)  # the stub loader: 10 steps/epoch
    assert {g["t_total"] for g in trainer.optimizer.param_groups} == {expected}


def test_training_step_trains_every_part():
    trainer = rsh_trainer(lr=0.1, clip_lr=0.1, warmup_proportion=0.5)
    batch = stub_batch(trainer, rows=8, seed=1)
    batch["label"] = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1], [0, 1, 0],
                                   [0, 0, 1]], dtype=torch.float32)
    trainer.model.eval()  # no dropout: the step's loss is rsh_loss of the model outputs
    out = trainer.training_step(batch)
    assert {"loss", "triplet", "quantization", "image_image", "image_text", "text_image", "text_text"} <= set(out)
    expected = rsh_loss(*trainer.model(batch["image"], batch["text"]), batch["label"])
    assert out["loss"].item() == pytest.approx(expected["loss"].item(), rel=1e-6)
    trainer.model.train()
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    for _ in range(2):  # BertAdam's first scheduled step has learning rate 0
        trainer.optimization_step(batch)
    moved = {name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])}
    assert moved == set(before)


def test_codes_come_from_the_hash_heads_only():
    trainer = rsh_trainer()
    trainer.model.eval()
    batch = stub_batch(trainer, rows=5)
    with torch.no_grad():
        codes = trainer.encode(batch)["8"]
        image, _, text, _ = trainer.model(batch["image"], batch["text"])
        trainer.model.image_uncertainty.weight.add_(1.0)
        trainer.model.text_uncertainty.weight.add_(1.0)
        again = trainer.encode(batch)["8"]
    assert codes[0].shape == codes[1].shape == (5, 8)
    torch.testing.assert_close(codes[0], torch.where(image >= 0, 1.0, -1.0))
    torch.testing.assert_close(codes[1], torch.where(text >= 0, 1.0, -1.0))
    assert all(torch.equal(a, b) for a, b in zip(codes, again))
