"""DSCGH: reference fixtures (loss terms, total, gradients, the per-epoch discrete code update, generated centres)
and properties.

The fixtures were computed by the reference code (QinLab-WFU/DSCGH @f2869da: utils/oursLossZero.py,
utils/triplet_loss.py, utils/calb.py, optimizeAccel.py, and train/hash_train.py `Trainer.train_epoch`/`train` run on
stubs) on CPU in float64; README.md, "How the fixtures were produced".
"""
import hashlib

import numpy as np
import pytest
import torch

from train.DSCGH import Trainer
from train.DSCGH.centers import csq_centers, read_centers
from train.DSCGH.codes import DiscreteCodes, orthonormal_factor
from train.DSCGH.loss import DSCGHLoss, center_loss, cosine_triplet_sum
from train.DSCGH.trainer import DSCGHConfig
from train.testing import build_trainer, stub_batch
from utils.errors import UserError

LABELS = [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 1], [0, 0, 0], [0, 1, 0]]  # items 0..7
INDEX = [5, 0, 3, 1, 7, 2, 6, 4]  # the batch: items in this order
CENTERS = [[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1]]  # K = 4, C = 3; δ = 0 ([4, 2] entry of the table)


def codes(offset, n=8, k=4):
    """The fixture's tanh codes: tanh(1.5 sin(0.9 arange(n k).reshape(n, k) + offset))."""
    return torch.tanh(1.5 * torch.sin(0.9 * torch.arange(n * k, dtype=torch.float64).reshape(n, k) + offset))


def epoch_outputs(epoch):
    """Image and text outputs of the batch in epoch `epoch` (rows in INDEX order)."""
    return codes(0.1 + epoch), codes(1.7 + 0.5 * epoch)


EPOCHS = [
    dict(
        start_codes=[[-1.0, -1.0, -1.0, 1.0],
                     [-1.0, -1.0, -1.0, -1.0],
                     [-1.0, 1.0, 1.0, 1.0],
                     [1.0, -1.0, 1.0, 1.0],
                     [1.0, -1.0, -1.0, -1.0],
                     [-1.0, 1.0, 1.0, -1.0],
                     [1.0, -1.0, -1.0, -1.0],
                     [-1.0, 1.0, -1.0, -1.0]],
        center=2.026582318792, triplets=(61.647799463873, 66.890095291134), loss=130.572421930411,
        grad_x=[[-3.775041055, -2.530406737244, 2.00584461261, 2.008669891921],
                [6.220927614601, -1.781417680204, -4.849228127796, -7.53249444996],
                [-2.440710342425, 2.611992750368, 6.054442099304, 4.348090227917],
                [0.418194967394, -2.868948435599, -3.465717134617, -1.362584225046],
                [-0.403779848979, -3.469974697044, -2.025093328798, -0.49709247029],
                [-2.193195417641, -5.319082525011, -2.187617425088, 1.551891361418],
                [2.957872362803, 4.695549058987, -0.321456604319, -2.323624976566],
                [-11.813790073152, -6.276502084628, 4.843701503641, 10.511013845878]],
        grad_y=[[-0.214655681998, -3.819487884354, -2.43946951834, -1.678140735081],
                [2.878518888224, 5.745725327613, 4.135801307388, -0.163784806379],
                [-9.684842255397, -8.983138911398, -5.630451442436, 3.98173935018],
                [4.362600130036, 2.304390928987, 1.138598705891, -3.92791576854],
                [2.926012246966, -0.144840576698, -1.402407722164, -2.803523410514],
                [1.049074867563, -0.086095650368, -2.13720217905, -0.991318339936],
                [-0.715096996689, 3.052985365412, 4.017216082941, 2.583075425114],
                [-2.07170627696, -9.627989636074, -8.902312346205, -2.998480768078]],
    ),
    dict(
        start_codes=[[-1.0, -1.0, -1.0, 1.0],
                     [-1.0, -1.0, -1.0, 1.0],
                     [-1.0, 1.0, 1.0, -1.0],
                     [1.0, -1.0, 1.0, -1.0],
                     [1.0, 1.0, 1.0, -1.0],
                     [1.0, 1.0, 1.0, -1.0],
                     [-1.0, -1.0, -1.0, 1.0],
                     [-1.0, -1.0, -1.0, -1.0]],
        center=1.596041770283, triplets=(47.227110959374, 48.660169546817), loss=97.489233902362,
        grad_x=[[0.079807730726, 0.170436261475, -0.666395718161, -0.014112474062],
                [-0.984507712443, -4.172417076643, -6.043047664672, -2.388885203221],
                [1.945234541956, 5.09430913224, 4.093982821312, 0.373875347923],
                [-3.237694948696, -6.496662752695, -1.545198935838, 1.332848483606],
                [-1.641659932095, -0.416674329515, -0.877373169584, 0.848751979259],
                [-2.866768848825, -0.678749815818, 1.443875058381, 1.298339173039],
                [1.606336898328, -0.507404819763, -2.155897309534, -2.078008559321],
                [-1.351385362351, 2.830175566161, 5.013017697696, 3.340586245435]],
        grad_y=[[-0.786841125265, -2.32103538492, -0.820041510379, -0.152477584093],
                [2.527968236247, 2.67785865985, 0.878415584355, -0.859334144801],
                [-8.12882305814, -6.599579298878, 0.747966539142, 7.527101594654],
                [1.737877044072, 1.563415668761, -2.832093630686, -2.224528827273],
                [0.19771358688, -0.991255683074, -0.031645546973, -1.29976035507],
                [0.588579542456, -1.90387830956, -2.920696249177, -1.207104614697],
                [0.253084110914, 2.426422480869, 1.724812805, 0.627372839553],
                [-2.311914545906, -4.144080736349, -2.803921742574, 0.674481467078]],
    ),
    dict(
        start_codes=[[-1.0, -1.0, 1.0, 1.0],
                     [-1.0, 1.0, 1.0, 1.0],
                     [1.0, 1.0, 1.0, -1.0],
                     [1.0, 1.0, 1.0, -1.0],
                     [1.0, 1.0, 1.0, -1.0],
                     [1.0, 1.0, 1.0, -1.0],
                     [-1.0, -1.0, -1.0, 1.0],
                     [-1.0, -1.0, -1.0, -1.0]],
        center=1.689163230644, triplets=(39.182343708762, 39.772679407897), loss=80.651432367042,
        grad_x=[[-0.439386409452, -0.677655883437, -0.514094784377, -0.134254893778],
                [-5.106950570923, -6.402322208796, -3.529665609922, 2.867799672637],
                [2.276622070288, 1.588274612198, 0.255015581058, -1.578518024668],
                [-5.678052799773, -0.10753629916, 2.34648086614, 4.228756792034],
                [-1.754473341792, 0.282171013886, 3.208708899483, 2.051540451976],
                [-0.083970585537, 0.529843279496, 0.378630692261, 0.536900330634],
                [-0.309318250705, -2.034293160364, -2.184988762097, -0.572468040795],
                [2.01085644896, 4.158930426519, 3.107447956753, -0.364217732708]],
        grad_y=[[-2.929169586332, -2.367251943885, -1.513907785785, 1.314161475295],
                [-1.395850133712, -1.093201909267, 0.381452575448, 1.094048662736],
                [-7.274471727014, -0.345276095837, 6.232253191813, 8.717987975631],
                [1.075217975307, -1.254863278987, -1.308218207094, -1.514928439008],
                [-0.995472440933, 1.064750907797, 0.843325451822, -0.11644955707],
                [-0.057627020842, -1.732904777611, -0.322411517024, -0.827537874461],
                [0.885057749682, 1.476322340991, 0.541198900076, 0.119546380391],
                [-1.749825790414, -1.876641767995, -0.31600523811, 0.759295346555]],
    ),
    dict(
        start_codes=[[-1.0, 1.0, 1.0, 1.0],
                     [1.0, 1.0, 1.0, -1.0],
                     [1.0, 1.0, -1.0, -1.0],
                     [1.0, -1.0, -1.0, -1.0],
                     [1.0, 1.0, -1.0, -1.0],
                     [1.0, 1.0, 1.0, -1.0],
                     [-1.0, -1.0, 1.0, 1.0],
                     [-1.0, -1.0, -1.0, 1.0]],
        center=2.319761622442, triplets=(33.395458397329, 33.585610062649), loss=69.307061979019,
        grad_x=[[-0.455289430059, -0.337373639129, -0.323837986278, 0.891139972442],
                [-3.45370868988, -0.37722080158, 2.462095962538, 4.305139521244],
                [-1.063469703233, 0.608488029651, 2.582004846786, 2.14151078682],
                [-0.404166141921, 1.997737156213, 0.983131313424, 1.583166008229],
                [-0.364392327035, 2.259606717165, -0.192188301744, 1.199471327889],
                [-0.554999505645, 0.186055730705, -0.398723824527, -0.143725937484],
                [0.08381889585, -0.419986916459, 0.349202703709, -0.024472811268],
                [1.599397582401, 1.286027473341, -0.413341914538, -1.409371237847]],
        grad_y=[[-2.700617276577, -1.775804079811, 0.34413857527, 2.797439946594],
                [-3.53168267675, 0.310571688451, 3.092183015054, 4.744201426582],
                [-1.625530736099, 1.460853169823, 4.465709389892, 3.299110676652],
                [-0.341316473271, 1.054936291184, -0.038974870154, 0.630421854705],
                [-0.106056412898, 2.481837797292, -0.087977341115, 1.258764155838],
                [-0.870330819684, -0.008861976074, -0.556644932473, -0.235645470439],
                [1.130026714291, 0.768912349139, 0.654246718142, -0.75640388604],
                [1.297316285029, 1.037123814335, -0.614629072038, -1.345585097757]],
    ),
]
AUXILIARY = [  # orth(B + D / γ) after each epoch (orthogonalization="reference")
    [[-0.277169553462, -0.269963894183, 0.118654707427, 0.190309208595],
     [-0.277169553462, -0.269963894183, 0.118654707427, 0.190309208595],
     [-0.540225774024, 0.728694270756, -0.198930175455, 0.370927968938],
     [-0.357546444675, 0.228694270756, 0.66709522833, -0.612244580836],
     [0.277169553462, 0.269963894183, -0.118654707427, -0.190309208595],
     [0.277169553462, 0.269963894183, -0.118654707427, -0.190309208595],
     [-0.277169553462, -0.269963894183, 0.118654707427, 0.190309208595],
     [-0.44294677575, -0.228694270756, -0.66709522833, -0.553607298287]],
    [[0.115329428155, 0.791636675487, -0.406276360932, 0.210515309876],
     [-0.535194203652, 0.410291240366, 0.09786565694, -0.009932938686],
     [0.043597718085, 0.234138937504, 0.450599306386, 0.519369490083],
     [0.793203395328, 0.120404535938, -0.126890028329, -0.128931967361],
     [0.148941812478, 0.089004663319, 0.429690020218, 0.01791728551],
     [0.148941812478, 0.089004663319, 0.429690020218, 0.01791728551],
     [-0.148941812478, -0.089004663319, -0.429690020218, -0.01791728551],
     [0.05140923539, -0.33449766441, -0.228736698214, 0.817467696145]],
    [[-0.767005192758, -0.310088640287, -0.141507255834, 0.060636512199],
     [-0.147983801187, 0.054748649512, -0.228906538853, 0.193176599874],
     [0.259602230135, -0.533576692938, -0.293559160345, -0.038679173392],
     [-0.043596526679, 0.066000489007, 0.133325590495, -0.944185659581],
     [0.371861273274, -0.020762354767, -0.304739363735, 0.004366191329],
     [-0.148354519788, -0.248489740941, -0.628169053045, -0.256221272797],
     [-0.371861273274, 0.020762354767, 0.304739363735, -0.004366191329],
     [0.148118794137, -0.741065561635, 0.493250727815, 0.018327808087]],
    [[0.158953277297, 0.384036149665, 0.275422179856, -0.557731733134],
     [0.102582647624, 0.341474680487, 0.353887995072, -0.094333018882],
     [0.432039891352, 0.410328053855, -0.063249521544, 0.567560745777],
     [0.408811073622, -0.656173709244, -0.061521152404, -0.293922932971],
     [0.287689698716, -0.191398599174, 0.125598154106, 0.295340205185],
     [0.47575370615, -0.025957124825, 0.49496783256, -0.139697969532],
     [-0.287689698716, 0.191398599174, -0.125598154106, -0.295340205185],
     [0.467496930469, 0.251072917682, -0.717340649706, -0.278484305558]],
]
CENTER_FIXTURE = dict(loss=1.274582070763,
    grad=[[0.000246765447, -0.055777024749, 0.000713551659, 0.000763392999, 0.000770187354, -0.05560635265,
           0.000645914525, 0.000404958515, -2.3529135e-05, -0.05678564286, -0.000660265285, -0.000746189329,
           -0.000770967626, -0.057108332852, -0.000704793253, -0.000547685301],
          [0.029273895772, 0.028085184101, 0.027255207196, -0.030600303255, 0.026764199914, 0.026748179587,
           0.026825495714, -0.030413619682, 0.027711597775, 0.028829089302, 0.02989715895, -0.027026332129,
           0.030683246975, 0.030745565479, 0.030717513873, -0.02692180689],
          [-0.028154614024, 0.02958750002, 0.028699479938, 0.028086258749, -0.030597899395, 0.027725985122,
           0.027715201823, 0.027774601316, -0.030449874769, 0.028447661489, 0.029287554705, 0.030080565563,
           -0.027918024168, 0.030658653511, 0.030703803125, 0.03068158838]],)
SHIPPED_MD5 = {  # md5 of the reference centre files as int64, C-order
    (24, 16): "aaa99cef7022f9fc33ff513b762628a5",  # flickr25k
    (24, 32): "acb0ad969539beba7d43cb83abea4ff4",  # flickr25k
    (24, 64): "ee9f6db11944743243cb7ff9e9e9d42e",  # flickr25k
    (24, 128): "3097a7a1a62a0c97b333a280e6eb71fa",  # flickr25k
    (21, 16): "61c3693aee6bc382dbf02de4e75135c7",  # nuswide
    (21, 32): "4bb88ea5ebfe194b90d2427f1dc6edd3",  # nuswide
    (21, 64): "a5bbc822f17681d12a0a17eff297320c",  # nuswide
    (21, 128): "0324f9a5cf9369f3dc9fd2e5e9c9d0b4",  # nuswide
    (80, 64): "7ddb2977b9f4a3652bc9442700738e66",  # coco
    (80, 128): "123a735671830b0f5a329a3bd08706bf",  # coco
}


def t(values):
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("epoch", range(4))
def test_reference_step_loss_and_gradients(epoch):
    case = EPOCHS[epoch]
    loss = DSCGHLoss(t(CENTERS), 0.0).double()
    x, y = (v.requires_grad_() for v in epoch_outputs(epoch))
    labels = t(LABELS)[INDEX]
    out = loss(x, y, labels, t(case["start_codes"])[INDEX])
    assert out["center"].item() == pytest.approx(case["center"], abs=1e-10)
    assert out["triplet"].item() == pytest.approx(sum(case["triplets"]), abs=1e-9)
    assert out["loss"].item() == pytest.approx(case["loss"], abs=1e-9)
    image_to_text = cosine_triplet_sum(x, labels, y, labels, 0.4)
    assert image_to_text.item() == pytest.approx(case["triplets"][0], abs=1e-9)
    out["loss"].backward()
    assert torch.allclose(x.grad, t(case["grad_x"]), atol=1e-9, rtol=0)
    assert torch.allclose(y.grad, t(case["grad_y"]), atol=1e-9, rtol=0)


@pytest.mark.parametrize("orthogonalization", ["reference", "polar"])
def test_reference_discrete_code_updates(orthogonalization):
    state = DiscreteCodes(8, 4, torch.Generator().manual_seed(0), orthogonalization=orthogonalization).double()
    state.codes.copy_(t(EPOCHS[0]["start_codes"]))
    state.auxiliary.copy_(state.codes)
    index = torch.tensor(INDEX)
    for epoch in range(4):
        assert torch.equal(state.targets(index), t(EPOCHS[epoch]["start_codes"])[index])
        state.record(index, *epoch_outputs(epoch))
        state.update(t(LABELS))
        if orthogonalization == "reference":
            # C_aux depends on the SVD's sign convention (torch's CPU LAPACK here and in the reference run)
            assert torch.allclose(state.auxiliary, t(AUXILIARY[epoch]), atol=1e-9, rtol=0)
        if epoch < 3:  # γ C_aux is small: here both orthogonalizations give the reference's codes
            assert torch.equal(state.codes, t(EPOCHS[epoch + 1]["start_codes"]))
        assert state.gamma == pytest.approx(0.0105)


def test_gamma_rules_and_extra_state():
    geometric = DiscreteCodes(8, 4, torch.Generator().manual_seed(0), gamma_rule="geometric")
    reference = DiscreteCodes(8, 4, torch.Generator().manual_seed(0))
    for _ in range(3):
        geometric.update(t(LABELS))
        reference.update(t(LABELS))
    assert geometric.gamma == pytest.approx(0.01 * 1.05 ** 3) and reference.gamma == pytest.approx(0.0105)
    restored = DiscreteCodes(8, 4, torch.Generator().manual_seed(1))
    restored.load_state_dict(geometric.state_dict())
    assert restored.gamma == geometric.gamma and torch.equal(restored.codes, geometric.codes)


def test_initial_state_and_record():
    state = DiscreteCodes(6, 8, torch.Generator().manual_seed(3))
    again = DiscreteCodes(6, 8, torch.Generator().manual_seed(3))
    assert torch.equal(state.codes, again.codes) and torch.equal(state.text_outputs, again.text_outputs)
    assert set(state.codes.unique().tolist()) <= {-1.0, 1.0} and torch.equal(state.auxiliary, state.codes)
    assert not state.multiplier.any()
    image = torch.rand(2, 8, requires_grad=True)
    state.record(torch.tensor([4, 1]), image, -image)
    assert torch.equal(state.image_outputs[[4, 1]], image.detach()) and not state.image_outputs.requires_grad
    assert torch.equal(state.text_outputs[1], -image.detach()[1])


def test_polar_factor_is_the_nearest_orthonormal_matrix():
    m = torch.randn(10, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    polar = orthonormal_factor(m, "polar")
    assert torch.allclose(polar.T @ polar, torch.eye(4, dtype=torch.float64), atol=1e-12)
    evals, evecs = torch.linalg.eigh(m.T @ m)
    assert torch.allclose(polar, m @ evecs @ torch.diag(evals.rsqrt()) @ evecs.T, atol=1e-12)
    reference = orthonormal_factor(m, "reference")
    assert torch.allclose(reference.T @ reference, torch.eye(4, dtype=torch.float64), atol=1e-12)
    assert (polar - m).norm() < (reference - m).norm()
    with pytest.raises(ValueError, match="orthogonalization"):
        orthonormal_factor(m, "qr")


def test_reference_center_loss_with_negative_threshold():
    centers = csq_centers(4, 16, torch.Generator()).double()
    x = torch.tanh(1.5 * torch.sin(0.37 * torch.arange(48, dtype=torch.float64).reshape(3, 16) + 0.2))
    x.requires_grad_()
    value = center_loss(x, centers, t([[1, 0, 1, 0], [0, 0, 0, 1], [0, 1, 1, 1]]), -0.25)
    assert value.item() == pytest.approx(CENTER_FIXTURE["loss"], abs=1e-10)
    value.backward()
    assert torch.allclose(x.grad, t(CENTER_FIXTURE["grad"]), atol=1e-10, rtol=0)


def test_triplet_sum_counts_only_valid_triplets():
    labels = t([[1, 0], [1, 0], [0, 1]])
    a = t([[1, 0], [0, 1], [1, 0]])  # image 2 (class 1) coincides with image 0 (class 0)
    # anchor 0: positives {0, 1} (cos 1, 0), negative {2} (cos 1): relu(0 - 0 + .4) + relu(1 - 0 + .4) = 1.8
    # anchor 1: positives {0, 1} (cos 0, 1), negative {2} (cos 0): relu(1 - 1 + .4) + relu(0 - 1 + .4) = 0.4
    # anchor 2: positive {2} (cos 1), negatives {0, 1} (cos 1, 0): relu(0 - 0 + .4) + relu(0 - 1 + .4) = 0.4
    assert cosine_triplet_sum(a, labels, a, labels, 0.4).item() == pytest.approx(2.6)
    same = t([[1, 0]] * 3)
    assert cosine_triplet_sum(a, same, a, same, 0.4).item() == 0  # no negatives


def test_quantization_term_and_weights():
    x, y = epoch_outputs(0)
    targets = t(EPOCHS[0]["start_codes"])[INDEX]
    out = DSCGHLoss(t(CENTERS), 0.0, triplet_weight=0.5, quantization_weight=0.1).double()(x, y, t(LABELS)[INDEX], targets)
    quantization = ((targets - x) ** 2).sum() + ((targets - y) ** 2).sum()
    assert out["quantization"].item() == pytest.approx(quantization.item(), abs=1e-12)
    assert out["loss"].item() == pytest.approx(
        EPOCHS[0]["center"] + 0.5 * sum(EPOCHS[0]["triplets"]) + 0.1 * quantization.item(), abs=1e-9)


def test_single_sample_batch_and_bf16():
    loss = DSCGHLoss(t(CENTERS), 0.0)
    x, y = codes(0.3, n=1).float().requires_grad_(), codes(0.9, n=1).float()
    out = loss(x, y, torch.tensor([[1.0, 0, 0]]), torch.ones(1, 4))
    out["loss"].backward()
    assert out["triplet"].item() == 0 and torch.isfinite(x.grad).all()
    xs, ys = epoch_outputs(1)
    labels, targets = t(LABELS)[INDEX].float(), t(EPOCHS[1]["start_codes"])[INDEX].float()
    full = loss(xs.float(), ys.float(), labels, targets)["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(xs.bfloat16(), ys.bfloat16(), labels, targets)["loss"]
    assert low.dtype == torch.float32 and low.item() == pytest.approx(full.item(), rel=2e-2)


@pytest.mark.parametrize("classes, bits", sorted(SHIPPED_MD5))
def test_generated_centers_equal_the_shipped_files(classes, bits):
    centers = csq_centers(classes, bits, torch.Generator().manual_seed(0))
    digest = hashlib.md5(centers.numpy().astype(np.int64).tobytes()).hexdigest()
    assert digest == SHIPPED_MD5[(classes, bits)]


def test_generated_centers_beyond_two_k_rows():
    centers = csq_centers(80, 16, torch.Generator().manual_seed(0))
    assert centers.shape == (80, 16) and set(centers.unique().tolist()) == {-1.0, 1.0}
    assert (centers[32:].sum(dim=1) == 0).all()  # the random rows are balanced
    assert torch.equal(centers, csq_centers(80, 16, torch.Generator().manual_seed(0)))
    assert not torch.equal(centers, csq_centers(80, 16, torch.Generator().manual_seed(1)))
    with pytest.raises(UserError, match="power-of-two"):
        csq_centers(10, 24, torch.Generator())


def test_read_centers(tmp_path):
    good = tmp_path / "c.npy"
    np.save(good, np.array(CENTERS, dtype=np.int64))
    assert torch.equal(read_centers(good, 3, 4), t(CENTERS).float())
    with pytest.raises(UserError, match="shape 3x4"):
        read_centers(good, 3, 8)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array(CENTERS) * 0.5)
    with pytest.raises(UserError, match=r"only \+1 and -1"):
        read_centers(bad, 3, 4)
    with pytest.raises(UserError, match="cannot read"):
        read_centers(tmp_path / "missing.npy", 3, 4)


# ------------------------------------------------------------------ the trainer
def dscgh_trainer(**options):
    options = {"num_classes": 3, "output_dim": 16, **options}
    return build_trainer(Trainer, num_train=10, **options)


def test_step_uses_and_records_the_batch_items():
    trainer = dscgh_trainer()
    trainer.model.eval()  # no dropout: the step's outputs are reproducible
    batch = stub_batch(trainer, rows=4)
    batch["index"] = torch.tensor([7, 2, 9, 0])
    codes = trainer.criterion.codes
    targets = codes.codes[batch["index"]].clone()
    image, text = trainer.model(batch["image"], batch["text"])
    expected = trainer.criterion.loss(image, text, batch["label"], targets)["loss"]
    untouched = codes.image_outputs[[1, 3]].clone()
    out = trainer.training_step(batch)
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert torch.allclose(codes.image_outputs[batch["index"]], image.detach())
    assert torch.allclose(codes.text_outputs[batch["index"]], text.detach())
    assert torch.equal(codes.image_outputs[[1, 3]], untouched)


def test_epoch_end_updates_the_codes_from_the_training_labels():
    trainer = dscgh_trainer()
    trainer.optimization_step(stub_batch(trainer, rows=6))
    expected = DiscreteCodes(10, 16, torch.Generator())
    expected.load_state_dict(trainer.criterion.codes.state_dict())
    expected.update(trainer.train_labels)
    trainer.on_epoch_end(0)
    assert torch.equal(trainer.criterion.codes.codes, expected.codes)
    assert trainer.criterion.codes.gamma == pytest.approx(0.0105)


def test_codes_and_centres_survive_a_checkpoint():
    trainer = dscgh_trainer(gamma_rule="geometric")
    trainer.optimization_step(stub_batch(trainer, rows=6))
    trainer.on_epoch_end(0)
    trainer.on_epoch_end(1)
    payload = trainer.checkpoint_payload(with_optimizers=False)
    restored = dscgh_trainer(gamma_rule="geometric", seed=5, train_seed=5)
    assert not torch.equal(restored.criterion.codes.codes, trainer.criterion.codes.codes)
    restored._load_modules_state(payload, "best.pt")
    tensors = {name: value for name, value in trainer.criterion.state_dict().items() if torch.is_tensor(value)}
    assert {"loss.centers", "codes.codes", "codes.auxiliary", "codes.multiplier"} <= set(tensors)
    for name, value in tensors.items():
        assert torch.equal(restored.criterion.state_dict()[name], value), name
    assert restored.criterion.codes.gamma == pytest.approx(0.01 * 1.05 ** 2)


def test_centres_generated_read_or_refused(tmp_path):
    generated = dscgh_trainer(num_classes=24)
    assert torch.equal(generated.criterion.loss.centers, csq_centers(24, 16, torch.Generator()))
    assert generated.criterion.loss.threshold == 0.0  # the coding-theory table at (16 bits, 24 classes)
    with pytest.raises(UserError, match="--centers"):
        dscgh_trainer(num_classes=40)  # more classes than 2 x 16 bits
    extra = dscgh_trainer(num_classes=40, random_extra_centers=True)
    assert extra.criterion.loss.centers.shape == (40, 16)
    path = tmp_path / "centers.npy"
    file_centers = np.where(np.arange(40 * 16).reshape(40, 16) % 3 == 0, 1, -1)
    np.save(path, file_centers)
    read = dscgh_trainer(num_classes=40, centers=str(path))
    assert torch.equal(read.criterion.loss.centers, torch.from_numpy(file_centers).float())
    assert read.criterion.loss.threshold == 0.25  # (16 bits, 6 = ceil(log2 40))


@pytest.mark.parametrize("options, message", [
    (dict(dataset="coco"), "more classes than 2 x bits"),
    (dict(dataset="coco", output_dim=32), "more classes than 2 x bits"),
    (dict(output_dim=24), "coding-theory threshold"),
    (dict(output_dim=24, threshold=0.0), "power-of-two"),
    (dict(centers="missing.npy"), "no such file"),
    (dict(gamma=0.0), "--gamma"),
])
def test_config_refusals_before_any_data(options, message):
    with pytest.raises(UserError, match=message):
        DSCGHConfig(**options)


def test_config_accepts_coco_with_a_route_to_centres(tmp_path):
    DSCGHConfig(dataset="coco", output_dim=64)
    DSCGHConfig(dataset="coco", random_extra_centers=True)
    path = tmp_path / "c.npy"
    np.save(path, np.ones((80, 16)))
    DSCGHConfig(dataset="coco", centers=str(path))
