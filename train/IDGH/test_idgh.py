"""IDGH: reference fixtures (QinLab-WFU/IDGH @8ff92ca, float64 on CPU; README "How the fixtures were produced")
and properties of the ranking-weighted triplet loss, the class statistics and the synthesis."""
import math

import pytest
import torch

from train.common import label_overlap
from train.IDGH.distribution import IntraClassDistribution, draw_noise, synthesize
from train.IDGH.loss import idgh_loss, lambda_schedule, ndcg_gain, ranking_triplet_loss, statistics_due, synthesis_active
from train.IDGH.trainer import IDGHConfig, Trainer
from train.testing import build_trainer, stub_batch
from utils.errors import UserError

# ---- hand-made inputs
TRIPLET_CASES = {
    "A_multi": dict(  # 0-1, 1-3, 1-4 and 2-3 share no label
        labels=[[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]],
        image=[[0.5, -0.2, 0.1, 0.7], [-0.3, 0.8, -0.5, 0.2], [0.6, 0.1, -0.4, -0.2], [0.2, -0.6, 0.3, 0.9],
               [0.4, 0.3, 0.2, -0.1]],
        text=[[0.4, -0.1, 0.3, 0.5], [-0.6, 0.7, -0.2, -0.1], [0.3, 0.4, -0.6, 0.1], [-0.1, -0.5, 0.6, 0.4],
              [0.5, 0.2, 0.1, 0.3]]),
    "B_single": dict(
        labels=[[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]],
        image=[[0.9, -0.3, 0.2], [-0.4, 0.6, 0.5], [0.7, -0.1, 0.4], [0.1, 0.2, -0.8], [-0.5, 0.7, 0.3],
               [0.3, 0.3, -0.6]],
        text=[[0.8, -0.2, 0.1], [-0.3, 0.5, 0.6], [0.2, 0.3, 0.4], [-0.2, 0.1, -0.9], [0.6, -0.4, 0.2],
              [0.1, 0.4, -0.5]]),
}
# two estimator updates (C = 4, K = 3, 25 neighbours capped at 2, β 0.1, γ 0.1); in the second, class 3 has one sample
UPDATES = [
    dict(labels=[[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1], [0, 1, 1, 0], [1, 0, 0, 0],
                 [0, 0, 0, 1]],
         image=[[0.9, -0.2, 0.4], [0.7, 0.5, -0.1], [-0.3, 0.8, 0.2], [0.6, -0.5, 0.9], [0.1, -0.7, 0.6],
                [-0.4, 0.3, 0.7], [0.8, 0.1, 0.3], [0.2, -0.6, -0.4]],
         text=[[0.8, -0.1, 0.5], [0.6, 0.4, 0.1], [-0.2, 0.9, 0.1], [0.5, -0.3, 0.8], [0.2, -0.8, 0.5],
               [-0.5, 0.4, 0.6], [0.7, 0.2, 0.2], [0.3, -0.5, -0.3]]),
    dict(labels=[[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1], [0, 1, 1, 0], [1, 0, 0, 0],
                 [0, 1, 0, 0]],
         image=[[0.5, 0.1, 0.2], [0.4, 0.6, -0.3], [-0.1, 0.7, 0.5], [0.8, -0.2, 0.6], [0.3, -0.4, 0.9],
                [-0.6, 0.1, 0.4], [0.9, 0.3, 0.1], [0.1, 0.5, -0.2]],
         text=[[0.6, 0.2, 0.3], [0.3, 0.5, -0.2], [0.0, 0.8, 0.4], [0.7, -0.1, 0.5], [0.4, -0.5, 0.8],
               [-0.5, 0.2, 0.3], [0.8, 0.4, 0.0], [0.2, 0.6, -0.1]]),
]
# synthesis and training-step inputs (row 2 has no label)
CODES_IMAGE = [[0.5, -0.2, 0.1], [-0.3, 0.8, -0.5], [0.6, 0.1, -0.4], [0.2, -0.6, 0.3]]
CODES_TEXT = [[0.4, -0.1, 0.3], [-0.6, 0.7, -0.2], [0.3, 0.4, -0.6], [-0.1, -0.5, 0.6]]
CODE_LABELS = [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 1, 0]]

# reference TripletLoss3 on normalised codes: (case, margin) -> (ii, tt, it, total, grad image, grad text)
REFERENCE_TRIPLETS = {
    ('A_multi', 0.5): (0.00812615642483741, 0.00692969411645346, 0.003198195773994765, 0.018254046315285634,
        [[-0.0169351878479, 0.000280023018868, -0.00915054151363, 0.0134837895415],
         [0.00152154755883, 0.00568131985853, 0.0135589157092, 0.0134543311772],
         [0.012236418165, -0.02655075168, 0.0136333051452, -0.00383273163561],
         [0.0197035127181, 0.0101855172282, -0.00498226223047, 0.00407254051384],
         [-0.0398544884668, 0.0346278611044, 0.0165729954917, -0.0223883795704]],
        [[-0.00161917892623, -0.000690728670518, -0.00109738304326, 0.00181562723283],
         [0.00842296053135, 0.00917217438999, 0.00787532259137, -0.00208318764094],
         [-0.0510590777504, -0.0150798361094, -0.0391296138105, -0.0212811051739],
         [0.0489981096076, 0.0221558382366, 0.0141241986956, 0.0187580271543],
         [-0.020504062094, -0.0935806529372, 0.11910104826, 0.0568601893617]]),
    ('A_multi', 0.9): (0.019950390866684802, 0.011673011436768204, 0.014884359725251478, 0.046507762028704484,
        [[-0.012514222367, 0.000315568419224, -0.00479570087671, 0.0097139927929],
         [0.00706828310028, 0.00755085769133, 0.0159832883936, 0.0203572148691],
         [0.00636097773496, -0.0301219586115, 0.00355290919558, -0.00308386449205],
         [0.0141838650556, 0.00944242208075, -0.00348420299877, 0.00430437904107],
         [-0.0372723005686, 0.0320932120699, 0.0210762792258, -0.0106570076131]],
        [[-0.00804833585186, -0.00368177804785, 0.00236852485956, 0.00428119815618],
         [0.00194210884643, 0.00977568351638, 0.0249810620715, 0.00681500739317],
         [-0.00255805979214, -0.0195461205882, -0.0154831358804, -0.0070401535529],
         [0.0148153932191, 0.0129638390255, 0.00924581935811, 0.00603991804942],
         [-0.0211204854468, -0.0028718557726, 0.0238360312136, 0.0291700358553]]),
    ('B_single', 0.05): (0.0, 0.03632999969980451, 0.03198511285843147, 0.06831511255823597,
        [[-0.00156931089726, -0.00630517929885, -0.00239586991059],
         [-0.00609710215881, 0.0107668665443, -0.0177979215802],
         [0.000388712385866, -0.00852688073165, -0.00281196685818],
         [0, 0, 0],
         [-0.00203463926349, 0.0054947003325, -0.0162120328817],
         [0, 0, 0]],
        [[-0.0015068962859, -0.00579960394549, 0.00045596239623],
         [-0.0161437398089, 0.0248926994691, -0.0288157861287],
         [-0.0587754356611, 0.025062712432, 0.0105906835065],
         [-0.00612879194973, 0.00829748318766, 0.00228389634301],
         [0.0153363003127, -0.0194005515337, -0.0848100040055],
         [-0.00154718742529, 0.0167237034866, 0.0130695253042]]),
    ('B_single', 0.5): (0.0, 0.03950225532558198, 0.05207677275104693, 0.0915790280766289,
        [[-0.00134512362623, -0.00540443939902, -0.0020536027805],
         [-0.00236967323521, 0.0102067303737, -0.0141438150366],
         [0.000333182045028, -0.00730875491284, -0.00241025730701],
         [0, 0, 0],
         [0.00064829068945, 0.00607848516717, -0.0131026475743],
         [0, 0, 0]],
        [[-0.00090075848746, -0.00838106617069, -0.00955606444169],
         [-0.00780225165392, 0.0153623619741, -0.0167030941387],
         [-0.0687571730198, 0.0365222219442, 0.00698692005175],
         [-0.00440527226877, 0.00779540846268, 0.00184510588891],
         [0.0122704585626, -0.0126253746927, -0.0620621250734],
         [0.00384185299133, 0.0148760521332, 0.0126692123048]]),
}

# reference Estimate_Covariance after each update: mean_i, mean_t, covariance_i, covariance_t, amount,
# neighbor_cov_i, neighbor_cov_t
REFERENCE_ESTIMATES = [
    dict(
        mean_image=[[0.75, -0.025, 0.375],
                    [-1.85037170771e-17, 0.533333333333, 0.266666666667],
                    [0.1, -0.3, 0.733333333333],
                    [0.4, -0.5, 0.2]],
        mean_text=[[0.65, 0.05, 0.4],
                   [-0.0333333333333, 0.566666666667, 0.266666666667],
                   [0.0666666666667, -0.233333333333, 0.633333333333],
                   [0.433333333333, -0.466666666667, 0.233333333333]],
        var_image=[[0.116491513491, 0.117028972603, 0.110865147237],
                   [0.161834564557, 0.108764382894, 0.0976271047137],
                   [0.173595173801, 0.0717449788103, 0.127546005354],
                   [0.101239701536, 0.0955391013107, 0.130028028215]],
        var_text=[[0.0961874563342, 0.136044321985, 0.0802458675059],
                  [0.139013180763, 0.146504782856, 0.0706584662814],
                  [0.138447266973, 0.100220569005, 0.0874477559082],
                  [0.0826207635293, 0.0727333269961, 0.0800460232864]],
        neighbor_var_image=[[0.145476691118, 0.112501752247, 0.106201562069],
                            [0.148357443183, 0.122584384472, 0.0938783449045],
                            [0.180013606403, 0.0446908540838, 0.152089946467],
                            [0.0930640766291, 0.104310101884, 0.120686952596]],
        neighbor_var_text=[[0.119048954093, 0.157462320028, 0.0826571447927],
                           [0.126730959598, 0.168985328286, 0.0735347632554],
                           [0.134090704123, 0.0703673467252, 0.103693876857],
                           [0.0823604270651, 0.0666703337196, 0.0683102190225]],
        amount=[4, 3, 3, 3]),
    dict(
        mean_image=[[0.7, 0.0875, 0.2625],
                    [-0.0285714285714, 0.5, 0.171428571429],
                    [0.133333333333, -0.233333333333, 0.683333333333],
                    [0.4, -0.5, 0.2]],
        mean_text=[[0.625, 0.15, 0.275],
                   [-0.0142857142857, 0.542857142857, 0.171428571429],
                   [0.133333333333, -0.183333333333, 0.583333333333],
                   [0.433333333333, -0.466666666667, 0.233333333333]],
        var_image=[[0.125910171218, 0.0883464790395, 0.120777809101],
                   [0.152664913402, 0.0882913766774, 0.109283599274],
                   [0.155251235129, 0.0787486269519, 0.116040832041],
                   [0.0990102056919, 0.102491135427, 0.119707286959]],
        var_text=[[0.0997106038749, 0.0907067159595, 0.0792107628793],
                  [0.12155476739, 0.0975171852422, 0.0798982453331],
                  [0.122878485082, 0.0879996856378, 0.0745963697594],
                  [0.0862372802923, 0.0696237300337, 0.0693601757406]],
        neighbor_var_image=[[0.13575467911, 0.0812113966479, 0.122295912143],
                            [0.154715412566, 0.0917981195357, 0.105960241772],
                            [0.135207994935, 0.0814383337622, 0.122418381453],
                            [0.0930640766291, 0.104310101884, 0.120686952596]],
        neighbor_var_text=[[0.107094202178, 0.0861413344577, 0.0755276553196],
                           [0.123765092547, 0.0998548378839, 0.0816722188323],
                           [0.106706566358, 0.0859289644659, 0.0755992219391],
                           [0.0823604270651, 0.0666703337196, 0.0683102190225]],
        amount=[8, 7, 6, 3]),
]

# normal draws in the reference's order: image 0, text 0, image 1, text 1, image 2, text 2
DRAWS = [
    [[-0.15, 0.79, 0.95],
     [-1.11, 1.69, -0.89],
     [-0.36, 1.23, 0.14],
     [-1.68, 0.32, 0.13]],
    [[0.14, 0.24, 1.4],
     [1.35, 2.44, 0.2],
     [2.45, 2.03, 1.78],
     [-0.92, -0.46, -0.72]],
    [[1.28, -0.99, 1.81],
     [-0.6, 1.61, 1.93],
     [-0.42, -0.08, -0.98],
     [-1.25, -0.19, 0.28]],
    [[0.13, 0.33, -0.08],
     [-0.92, -1.89, 1.01],
     [-0.69, 0.91, 0.11],
     [0.61, 0.33, -0.88]],
    [[-1.68, -0.72, 0.96],
     [0.13, 0.55, 2.13],
     [-0.88, -2.08, 1.83],
     [-0.55, 1.04, -1.26]],
    [[0.42, -1.3, 0.43],
     [-1.15, -0.81, -0.91],
     [-0.07, 1.11, -0.87],
     [-0.14, -0.67, 1]],
]

# reference intra_synthetsis, aug_num 1, λ 0.72, after update 2 (rows: copy 0, copy 1, ...)
REFERENCE_SYNTHESIS_1 = (
    [[0.457316805497, 0.00706673515963, 0.379523897773],
     [-0.668009347208, 1.22610055698, -0.749651255632],
     [0.6, 0.1, -0.4],
     [-0.334488530704, -0.52151564409, 0.337957932562]],
    [[0.43622220727, -0.0423405497672, 0.623777171204],
     [-0.200620269326, 1.34654187436, -0.152030535586],
     [0.3, 0.4, -0.6],
     [-0.360430004514, -0.616675357926, 0.430577147491]])
# reference intra_synthetsis, aug_num 3, λ 0.72, after update 2 (rows: copy 0, copy 1, ...)
REFERENCE_SYNTHESIS_3 = (
    [[0.457316805497, 0.00706673515963, 0.379523897773],
     [-0.668009347208, 1.22610055698, -0.749651255632],
     [0.6, 0.1, -0.4],
     [-0.334488530704, -0.52151564409, 0.337957932562],
     [1.12896419684, -0.666885023891, 1.00439753616],
     [-0.618238202153, 1.54468344839, 0.441591023383],
     [0.6, 0.1, -0.4],
     [-0.449467904359, -0.68667688347, 0.439370467432],
     [-0.584801771114, -0.655462889838, 0.725093175322],
     [-0.212787846651, 1.14456307023, 0.870456421572],
     [0.6, 0.1, -0.4],
     [-0.165190655598, 0.0470551662822, -0.518860711221]],
    [[0.43622220727, -0.0423405497672, 0.623777171204],
     [-0.200620269326, 1.34654187436, -0.152030535586],
     [0.3, 0.4, -0.6],
     [-0.360430004514, -0.616675357926, 0.430577147491],
     [0.460911587254, 0.0489967152353, 0.264560938868],
     [-1.06094284655, -0.196186394708, 0.255640098642],
     [0.3, 0.4, -0.6],
     [0.198961013452, -0.346906158235, 0.206780048594],
     [0.66482604767, -0.904651556882, 0.563631737843],
     [-1.34982616839, 0.186209089922, -0.763021267988],
     [0.3, 0.4, -0.6],
     [-0.190282488907, -0.920368166004, 1.21575729117]])

# reference training step on rows 0, 1, 3 (aug 3, λ 0.72, margin 0.05): ii, tt, it, total, grad image, grad text
REFERENCE_STEPS = {
    'reference': (0.010764417365925575, 0.00720719310006436, 0.016961314839422356, 0.03493292530541229,
        [[-0.00591555970844, 0.0111168731294, -0.000536563449941],
         [0.00324236301596, -0.00588406039067, -4.64904281077e-05],
         [-0.0144166424162, 0.0588900720786, 0.0167016633408]],
        [[0.00435158311869, 0.0210993513048, -0.00575596234739],
         [0.0219112700719, -0.0269297325307, 0.00316958910095],
         [-0.0172809652218, 0.0131047741829, -0.000203764580807]]),
    'std': (3.291669947048921e-05, 0.0026367632426911244, 0.002099300402668596, 0.00476898034483021,
        [[-0.00551439435666, 0.0359434309512, 0.00597544059144],
         [0.00829164742116, 0.00150748111031, 0.0073357904204],
         [-0.0493764610117, 0.010005354695, -0.0300170961037]],
        [[0.0179489179539, 0.0278771810878, -0.0173154401581],
         [-0.00453425147899, -0.0193772901669, 0.0117045678309],
         [-0.0214470837699, 0.0060716320494, -0.00925721826152]]),
}

def f64(rows, requires_grad=False):
    return torch.tensor(rows, dtype=torch.float64, requires_grad=requires_grad)


def estimator_after(updates):
    estimator = IntraClassDistribution(4, 3, neighbors=2).double()
    for u in UPDATES[:updates]:
        estimator.update(f64(u["image"]), f64(u["text"]), f64(u["labels"]))
    return estimator


@pytest.mark.parametrize("key", list(REFERENCE_TRIPLETS))
def test_reference_triplet_terms_and_gradients(key):
    """rtol 1e-7: the reference's NDCG discounts log2(r + 2) are float32 (torch.arange(0., B)), ~1e-8 off."""
    case, margin = key
    ii, tt, it, total, grad_image, grad_text = REFERENCE_TRIPLETS[key]
    c = TRIPLET_CASES[case]
    image, text = f64(c["image"], True), f64(c["text"], True)
    out = idgh_loss(image, text, f64(c["labels"]), margin=margin)
    assert [out[k].item() for k in ("image_image", "text_text", "image_text")] == pytest.approx(
        [ii, tt, it], rel=1e-7, abs=1e-15)
    assert out["loss"].item() == pytest.approx(total, rel=1e-7)
    out["loss"].backward()
    torch.testing.assert_close(image.grad, f64(grad_image), rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(text.grad, f64(grad_text), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("updates", [1, 2])
def test_reference_estimates(updates):
    """rtol 1e-6: the reference computes the refinement weights in float32 (its class counts are float32)."""
    estimator = estimator_after(updates)
    for name, expected in REFERENCE_ESTIMATES[updates - 1].items():
        torch.testing.assert_close(getattr(estimator, name), f64(expected), rtol=1e-6, atol=1e-12, msg=name)


@pytest.mark.parametrize("copies, scale", [(1, "std"), (1, "reference"), (3, "reference")])
def test_reference_synthesis(copies, scale):
    estimator = estimator_after(2)
    var_image, var_text = estimator.sample_variances(f64(CODE_LABELS))
    noise_image, noise_text = f64(DRAWS[0:2 * copies:2]), f64(DRAWS[1:2 * copies:2])
    image, text, labels = synthesize(f64(CODES_IMAGE), f64(CODES_TEXT), f64(CODE_LABELS), var_image, var_text, 0.72,
                                     noise_image, noise_text, scale=scale)
    expected_image, expected_text = REFERENCE_SYNTHESIS_1 if copies == 1 else REFERENCE_SYNTHESIS_3
    torch.testing.assert_close(image, f64(expected_image), rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(text, f64(expected_text), rtol=1e-6, atol=1e-12)
    assert labels.tolist() == CODE_LABELS * copies
    assert image[2].tolist() == CODES_IMAGE[2]  # no label: no shift (the reference's global variance buffer is 0)


@pytest.mark.parametrize("scale", ["reference", "std"])
def test_reference_training_step(scale):
    """Rows 0, 1, 3 with three synthetic copies each; "std" was produced by three aug_num = 1 reference calls.

    Tolerances: float32 refinement weights and discounts in the reference (see above); the smallest term is ~3e-5.
    """
    ii, tt, it, total, grad_image, grad_text = REFERENCE_STEPS[scale]
    rows = [0, 1, 3]
    estimator = estimator_after(2)
    image, text = f64([CODES_IMAGE[r] for r in rows], True), f64([CODES_TEXT[r] for r in rows], True)
    labels = f64([CODE_LABELS[r] for r in rows])
    var_image, var_text = estimator.sample_variances(labels)
    noise_image, noise_text = f64(DRAWS[0::2])[:, rows], f64(DRAWS[1::2])[:, rows]
    syn_image, syn_text, syn_labels = synthesize(image, text, labels, var_image, var_text, 0.72, noise_image,
                                                 noise_text, scale=scale)
    out = idgh_loss(torch.cat([image, syn_image]), torch.cat([text, syn_text]), torch.cat([labels, syn_labels]))
    assert [out[k].item() for k in ("image_image", "text_text", "image_text")] == pytest.approx(
        [ii, tt, it], rel=1e-6, abs=1e-9)
    assert out["loss"].item() == pytest.approx(total, rel=1e-6)
    out["loss"].backward()
    torch.testing.assert_close(image.grad, f64(grad_image), rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(text.grad, f64(grad_text), rtol=1e-5, atol=1e-10)


def test_zero_label_row_is_finite():
    """The reference's NDCG normaliser is 0/0 for a label row of zeros: its loss is NaN; here the row has gain 0."""
    image, text = f64(CODES_IMAGE, True), f64(CODES_TEXT, True)
    out = idgh_loss(image, text, f64(CODE_LABELS), margin=0.5)
    out["loss"].backward()
    assert math.isfinite(out["loss"].item()) and out["loss"].item() > 0
    assert torch.isfinite(image.grad).all() and torch.isfinite(text.grad).all()
    assert ndcg_gain(f64(CODE_LABELS))[2].tolist() == [0, 0, 0, 0]


def test_ndcg_gain_ideal_ranking_scores_one():
    labels = f64([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]])
    gain = ndcg_gain(labels)
    discount = torch.log2(torch.arange(5, dtype=torch.float64) + 2)
    ideal = (gain.sort(dim=1, descending=True).values / discount).sum(dim=1)
    torch.testing.assert_close(ideal, torch.ones(5, dtype=torch.float64))
    shared = label_overlap(labels)
    assert gain[0, 3].item() == pytest.approx((2 ** 2 - 1) * gain[0, 1].item())  # s = 2 vs s = 1
    assert (gain[shared == 0] == 0).all()


def test_anchor_is_its_own_positive():
    """Two samples of different classes, distance d between them: only (a, a, n) triplets exist."""
    x = f64([[1.0, 0.0], [0.8, 0.6]])  # cos 0.8, d 0.2
    labels = f64([[1, 0], [0, 1]])
    # ℓ = 0.1 · g(a, a) · (0 − 0.2 + m) with g(a, a) = 1 (one label, alone in its class)
    assert ranking_triplet_loss(x, x, labels, margin=0.5).item() == pytest.approx(0.1 * 0.3)
    assert ranking_triplet_loss(x, x, labels, margin=0.1).item() == 0.0


def test_first_update_is_plain_class_statistics_for_frequent_classes():
    """α = 1 at the first update; classes with at least 40 samples are not refined."""
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(300, 3, generator=g) < 0.5).double()
    image, text = torch.randn(300, 5, generator=g, dtype=torch.float64), torch.randn(300, 5, generator=g,
                                                                                     dtype=torch.float64)
    estimator = IntraClassDistribution(3, 5).double()
    estimator.update(image, text, labels)
    for c in range(3):
        rows = labels[:, c] > 0
        torch.testing.assert_close(estimator.mean_image[c], image[rows].mean(0))
        torch.testing.assert_close(estimator.var_text[c], text[rows].var(0, unbiased=False))
    assert estimator.amount.tolist() == labels.sum(0).tolist()


def test_update_ignores_sample_order_and_absent_classes():
    u = UPDATES[0]
    order = torch.tensor([5, 2, 7, 0, 3, 6, 1, 4])
    labels = torch.cat([f64(u["labels"]), torch.zeros(8, 1, dtype=torch.float64)], dim=1)  # class 4: no sample
    a, b = IntraClassDistribution(5, 3, neighbors=2).double(), IntraClassDistribution(5, 3, neighbors=2).double()
    a.update(f64(u["image"]), f64(u["text"]), labels)
    b.update(f64(u["image"])[order], f64(u["text"])[order], labels[order])
    for name, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[name], rtol=1e-12, atol=1e-15)
    assert a.var_image[4].tolist() == [0, 0, 0] and a.amount[4].item() == 0  # the reference cannot index it
    torch.testing.assert_close(a.var_image[:4], estimator_after(1).var_image, rtol=1e-12, atol=1e-15)


def test_class_weights():
    estimator = IntraClassDistribution(4, 3)
    weights = estimator.class_weights(torch.tensor([0.0, 1.0, 11.0, 40.0]))
    assert weights[0].item() == 0 and weights[3].item() == 0
    assert weights[1].item() == pytest.approx(1.0)
    assert weights[2].item() == pytest.approx(1 / (1 + math.log(2)))


def test_synthesis_scales_and_gradient():
    var = torch.full((2, 3), 0.0625, dtype=torch.float64)  # σ = 0.25
    noise = torch.ones(3, 2, 3, dtype=torch.float64)
    codes = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    image, _, labels = synthesize(codes, codes, f64([[1, 0], [0, 1]]), var, var, 0.64, noise, noise)
    assert image[:, 0].tolist() == pytest.approx([0.8 * 0.25] * 6)
    reference, _, _ = synthesize(codes, codes, f64([[1, 0], [0, 1]]), var, var, 0.64, noise, noise,
                                 scale="reference")
    assert reference[::2, 0].tolist() == pytest.approx([0.8 * 0.0625 ** e for e in (1 / 2, 1 / 4, 1 / 8)])
    image.sum().backward()
    assert codes.grad.tolist() == [[3.0] * 3] * 2  # each code reaches its three copies
    assert labels.shape == (6, 2)
    with pytest.raises(ValueError, match="synthesis scale"):
        synthesize(codes, codes, labels[:2], var, var, 0.64, noise, noise, scale="cov")


def test_draw_noise_follows_the_reference_order():
    torch.manual_seed(3)
    expected = [torch.randn(4, 2) for _ in range(4)]
    torch.manual_seed(3)
    noise_image, noise_text = draw_noise(2, 4, 2)
    assert torch.equal(noise_image[1], expected[2]) and torch.equal(noise_text[0], expected[1])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(draw_noise(3, 2, 2, generator=g1)[0], draw_noise(3, 2, 2, generator=g2)[0])


def test_schedules_with_reference_defaults():
    assert [lambda_schedule(0.8, 101, e) for e in (0, 40, 41, 60, 61, 80, 81, 100)] == pytest.approx(
        [0.8, 0.8, 0.72, 0.72, 0.6, 0.6, 0.48, 0.48])
    assert [e for e in range(101) if statistics_due(e, 31)] == list(range(32, 101, 4))
    assert [e for e in range(101) if synthesis_active(e, 31)] == list(range(32, 101))


def test_bf16_autocast_runs_in_float32():
    c = TRIPLET_CASES["B_single"]
    image, text = f64(c["image"]).bfloat16(), f64(c["text"]).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = idgh_loss(image, text, f64(c["labels"]).float(), margin=0.5)
    assert out["loss"].dtype == torch.float32
    assert out["loss"].item() == pytest.approx(REFERENCE_TRIPLETS[("B_single", 0.5)][3], rel=2e-2)


# ---------------------------------------------------------------- trainer
TRAIN_LABELS = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1],
                             [1, 1, 0], [0, 0, 1]], dtype=torch.float32)


def idgh_trainer(**options):
    options = {"output_dim": 8, "head_dropout": 0.0, **options}
    return build_trainer(Trainer, num_classes=3, train_labels=TRAIN_LABELS, **options)


def training_set_batches(trainer, rows=(6, 4)):
    """The stub training set in two batches (labels TRAIN_LABELS), for the statistics pass."""
    batches, start = [], 0
    for seed, count in enumerate(rows):
        batch = stub_batch(trainer, rows=count, seed=seed)
        batch["label"] = TRAIN_LABELS[start:start + count]
        batches.append(batch)
        start += count
    return batches


def test_reference_defaults_and_demo_start():
    cfg = IDGHConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.weight_decay, cfg.eval_every) == (101, 64, 1e-4, 5)
    assert cfg.head_init == "default"
    assert (cfg.synthesis_start, cfg.synthesis_warmup, cfg.statistics_every, cfg.copies) == (31, 0, 4, 3)
    assert (cfg.intra_lambda, cfg.margin, cfg.momentum, cfg.neighbors) == (0.8, 0.05, 0.8, 25)
    demo = IDGHConfig.defaults_for("demo")
    assert (demo["epochs"], demo["synthesis_start"]) == (25, 7)
    assert "synthesis_start" not in IDGHConfig.defaults_for("flickr25k")
    with pytest.raises(UserError, match="--synthesis-start 4: synthesis would begin"):
        IDGHConfig(synthesis_start=4)
    assert IDGHConfig(synthesis_start=4, synthesis_warmup=3).synthesis_start == 4  # statistics at 8, synthesis at 8
    with pytest.raises(UserError, match="--copies"):
        IDGHConfig(copies=0)


@pytest.mark.parametrize("steps_per_epoch, expected", [(None, 10 * 7), (5000, 5000 * 7)])
def test_schedule_length(steps_per_epoch, expected):
    trainer = idgh_trainer(epochs=7, schedule_steps_per_epoch=steps_per_epoch)  # the stub loader: 10 steps/epoch
    assert {g["t_total"] for g in trainer.optimizer.param_groups} == {expected}
    assert all(g["weight_decay"] == 1e-4 for g in trainer.optimizer.param_groups)


@pytest.mark.parametrize("epoch, updated", [(31, False), (32, True), (33, False), (36, True)])
def test_statistics_pass_before_due_epochs(epoch, updated):
    trainer = idgh_trainer()
    batches = training_set_batches(trainer)
    trainer.statistics_batches = lambda epoch: batches
    trainer.model.eval()
    trainer.on_epoch_start(epoch)
    assert trainer.model.training == updated  # the reference encodes in train mode
    if not updated:
        assert trainer.criterion.amount.sum().item() == 0
        return
    expected = IntraClassDistribution(3, 8)
    with torch.no_grad():  # no dropout (head_dropout 0): the codes are the model's outputs
        codes = [trainer.model(b["image"], b["text"]) for b in batches]
    expected.update(torch.cat([c[0] for c in codes]), torch.cat([c[1] for c in codes]), TRAIN_LABELS)
    assert trainer.criterion.amount.tolist() == TRAIN_LABELS.sum(0).tolist()
    for name, buffer in expected.named_buffers():
        torch.testing.assert_close(getattr(trainer.criterion, name), buffer)


def test_statistics_pass_encodes_with_dropout():
    trainer = idgh_trainer(head_dropout=0.5)
    batches = training_set_batches(trainer)
    image, text, labels = trainer.training_set_codes(batches)
    assert image.shape == text.shape == (10, 8) and torch.equal(labels, TRAIN_LABELS)
    assert not image.requires_grad
    trainer.model.eval()
    with torch.no_grad():
        clean = torch.cat([trainer.model.encode_image(b["image"]) for b in batches])
    assert (image == 0).any() and not torch.allclose(image, clean)


def test_training_step_before_and_after_synthesis_starts():
    trainer = idgh_trainer(synthesis_start=3, epochs=15)
    trainer.statistics_batches = lambda epoch: training_set_batches(trainer)
    batch = stub_batch(trainer, rows=6, seed=7)
    batch["label"] = TRAIN_LABELS[:6]
    trainer.epochs_done = 3  # not yet: epochs > 3 synthesise
    image, text = trainer.model(batch["image"], batch["text"])
    real = idgh_loss(image, text, batch["label"])
    assert trainer.training_step(batch)["loss"].item() == pytest.approx(real["loss"].item(), rel=1e-6)

    trainer.on_epoch_start(4)
    trainer.epochs_done, trainer.global_step = 4, 12
    assert trainer.criterion.var_image.abs().sum() > 0
    out = trainer.training_step(batch)
    var_image, var_text = trainer.criterion.sample_variances(batch["label"])
    noise = draw_noise(3, 6, 8, generator=trainer.step_generator())
    synthetic = synthesize(image, text, batch["label"], var_image, var_text, lambda_schedule(0.8, 15, 4), *noise)
    expected = idgh_loss(*(torch.cat([real_rows, copies]) for real_rows, copies in
                           zip((image, text, batch["label"]), synthetic)))
    assert out["loss"].item() == pytest.approx(expected["loss"].item(), rel=1e-6)
    assert out["loss"].item() != pytest.approx(real["loss"].item(), rel=1e-3)
    trainer.global_step = 13  # another step draws other copies
    assert trainer.training_step(batch)["loss"].item() != pytest.approx(out["loss"].item(), rel=1e-6)


def test_class_statistics_are_checkpointed():
    trainer = idgh_trainer()
    trainer.statistics_batches = lambda epoch: training_set_batches(trainer)
    trainer.on_epoch_start(32)
    payload = trainer.checkpoint_payload(with_optimizers=False)
    restored = idgh_trainer(seed=1)
    restored._load_modules_state(payload, "checkpoint")
    for name, buffer in trainer.criterion.named_buffers():
        assert torch.equal(getattr(restored.criterion, name), buffer), name
    assert restored.criterion.amount.sum() > 0
