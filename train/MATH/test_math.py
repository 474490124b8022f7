"""MATH: reference fixtures (fixtures.json, computed by the reference code in float64) and properties."""
import json
import math
from pathlib import Path

import pytest
import torch

from model.clip import build_tiny_clip
from train.data import DataFacts
from train.MATH.label_text import label_sentence, label_sentences
from train.MATH.loss import MATHLoss
from train.MATH.model import LabelModalityAttention, MATHHead, MATHOutput, TokenHashing
from train.MATH.trainer import MATHConfig, Trainer
from utils.errors import UserError
from utils.text import CaptionTokenizer, padding_mask

FIXTURES = json.loads((Path(__file__).parent / "fixtures.json").read_text())
REF_TERMS = {"intra": "intra_likelihood", "inter": "inter_likelihood", "mse": "MSE", "quantization": "quantization",
             "contrastive": "contrastive_alignment"}
# our output field -> the reference's output_dict key
REF_KEYS = {"cls_image": "img_cls_hash", "cls_text": "txt_cls_hash", "cls_label": "lab_cls_hash",
            "tok_image": "img_tokens_hash", "tok_text": "txt_tokens_hash", "tok_label": "lab_tokens_hash",
            "res_image": "res_img_cls", "res_text": "res_txt_cls", "res_label": "res_lab_cls"}


def t(values, requires_grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)


def det(shape, phase, scale=1.0):
    """scale * sin(0.61 i + phase), i = 0..numel-1: the fixture script's deterministic values."""
    n = math.prod(shape)
    return scale * torch.sin(0.61 * torch.arange(n, dtype=torch.float64) + phase).reshape(shape)


def make_loss(case):
    loss = MATHLoss(t(case["train_labels"]), case["bits"]).double()
    for name, ref in (("image", "img"), ("text", "txt"), ("label", "lab")):
        loss.bank(name).copy_(t(case["banks_before"][ref]))
    return loss


def fixture_outputs(case):
    return MATHOutput(**{ours: t(case["inputs"][ref], requires_grad=True) for ours, ref in REF_KEYS.items()})


# ---------------------------------------------------------------- loss
@pytest.mark.parametrize("case", FIXTURES["loss"], ids=["multi-label", "no-shared-label-and-zero-row"])
def test_loss_fixture_values_and_gradients(case):
    loss = make_loss(case)
    out = fixture_outputs(case)
    labels = t(case["train_labels"])[case["index"]]
    loss.update_banks(torch.tensor(case["index"]), out)
    terms = loss(out, labels)
    for ours, ref in REF_TERMS.items():
        assert terms[ours].item() == pytest.approx(case["terms"][ref], rel=1e-10)
    assert terms["loss"].item() == pytest.approx(case["total"], rel=1e-10)
    terms["loss"].backward()
    for ours, ref in REF_KEYS.items():
        torch.testing.assert_close(getattr(out, ours).grad, t(case["grads"][ref]), rtol=1e-9, atol=1e-12)


def test_bank_update_writes_batch_rows_only():
    case = FIXTURES["loss"][0]
    loss = make_loss(case)
    before = loss.bank_text.clone()
    out = fixture_outputs(case)
    loss.update_banks(torch.tensor(case["index"]), out)
    assert torch.equal(loss.bank_text[case["index"]], out.cls_text.detach())
    untouched = [i for i in range(len(before)) if i not in case["index"]]
    assert torch.equal(loss.bank_text[untouched], before[untouched])
    assert not loss.bank_text.requires_grad


def test_banks_are_checkpointed_and_labels_are_not():
    keys = set(MATHLoss(torch.eye(3), 4).state_dict())
    assert keys == {"bank_image", "bank_text", "bank_label"}


def test_single_sample_batch():
    loss = MATHLoss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 3).double()
    out = MATHOutput(*(det((1, 3), j, 0.5) for j in range(6)),
                     *(torch.nn.functional.normalize(det((1, 4), j), dim=1) for j in range(3)))
    terms = loss(out, t([[1.0, 0.0]]))
    assert terms["contrastive"].item() == pytest.approx(0.0, abs=1e-12)  # one pair: its own positive
    assert torch.isfinite(terms["loss"])


def test_loss_under_bf16_autocast_stays_float32():
    case = FIXTURES["loss"][0]
    loss = make_loss(case).float()
    out = MATHOutput(**{ours: torch.tensor(case["inputs"][ref]).to(torch.bfloat16) for ours, ref in REF_KEYS.items()})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = loss(out, torch.tensor(case["train_labels"])[case["index"]])
    assert terms["loss"].dtype == torch.float32
    assert terms["loss"].item() == pytest.approx(case["total"], rel=2e-2)


def test_mse_trains_only_the_token_hashes():
    case = FIXTURES["loss"][0]
    loss = make_loss(case)
    loss.weights = dict(intra=0.0, inter=0.0, mse=1.0, quantization=0.0, contrastive=0.0)
    out = fixture_outputs(case)
    loss(out, t(case["train_labels"])[case["index"]])["loss"].backward()
    assert torch.all(out.cls_image.grad == 0) and torch.any(out.tok_image.grad != 0)


def test_quantization_target_is_sign_of_summed_global_hashes():
    loss = MATHLoss(torch.tensor([[1.0]]), 2).double()
    loss.weights = dict(intra=0.0, inter=0.0, mse=0.0, quantization=1.0, contrastive=0.0)
    cls = [t([[0.5, -0.2]]), t([[0.1, -0.3]]), t([[-0.4, 0.6]])]  # sums 0.2, 0.1 -> B = [1, 1]
    tok = [t([[0.5, 1.0]]), t([[0.9, 0.3]]), t([[0.4, 0.4]])]
    res = [torch.nn.functional.normalize(det((1, 2), j), dim=1) for j in range(3)]
    value = loss(MATHOutput(*cls, *tok, *res), t([[1.0]]))["quantization"].item()
    expected = sum(((0.5 * (c + k) - 1) ** 2).sum().item() for c, k in zip(cls, tok)) / 2
    assert value == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- label attention
@pytest.mark.parametrize("case", FIXTURES["attention"], ids=["n3-d4", "n2-d16"])
def test_label_attention_fixture(case):
    lab, img, txt = (t(case[k], requires_grad=True) for k in ("label", "image", "text"))
    out = LabelModalityAttention()(lab, img, txt)
    torch.testing.assert_close(out, t(case["output"]), rtol=1e-12, atol=1e-12)
    (out * t(case["weights"])).sum().backward()
    for name, x in (("label", lab), ("image", img), ("text", txt)):
        torch.testing.assert_close(x.grad, t(case["grads"][name]), rtol=1e-10, atol=1e-12)


def test_label_attention_reads_the_given_keys():
    """Under torchrun the keys are the gathered batch: rows from other processes change the result."""
    lab, img, txt = det((2, 4), 0), det((2, 4), 1), det((2, 4), 2)
    local = LabelModalityAttention()(lab, img, txt)
    wider = LabelModalityAttention()(lab, torch.cat([img, det((3, 4), 3)]), torch.cat([txt, det((3, 4), 4)]))
    assert not torch.allclose(local, wider)


# ---------------------------------------------------------------- head
def fill(module):
    """The fixture script's deterministic weights, in our parameter order."""
    for i, (name, p) in enumerate(module.named_parameters()):
        with torch.no_grad():
            if p.ndim == 1 and ("ln" in name or "norms" in name) and name.endswith("weight"):
                p.copy_(1 + det(p.shape, 0.5 * i, 0.1))
            elif p.ndim == 1:
                p.copy_(det(p.shape, 0.5 * i, 0.02))
            else:
                p.copy_(det(p.shape, 0.5 * i, p.shape[1] ** -0.5))


def checksums(x):
    flat = x.detach().reshape(-1)
    return [float((flat * det(flat.shape, j * 1.7)).sum()) for j in range(3)]


@pytest.mark.parametrize("case", FIXTURES["head"], ids=["d64-k4"])
def test_head_fixture(case):
    """GCL shared by three modalities, three token branches, label attention: the reference HashingModel."""
    n, dim, bits, phase = case["n"], case["dim"], case["bits"], case["phase"]
    head = MATHHead(dim, bits, transformer_layers=1, res_mlp_layers=1).double().eval()
    fill(head)
    li, lt, ll = case["lengths"]
    inputs = dict(img_tokens=det((n, li, dim), phase, 0.5), txt_tokens=det((n, lt, dim), phase + 1, 0.5),
                  lab_tokens=det((n, ll, dim), phase + 2, 0.5), img_cls=det((n, dim), phase + 3, 0.5),
                  txt_eos=det((n, dim), phase + 4, 0.5), lab_eos=det((n, dim), phase + 5, 0.5))
    for x in inputs.values():
        x.requires_grad_()
    out = head(inputs["img_cls"], inputs["img_tokens"], inputs["txt_eos"], inputs["txt_tokens"], inputs["lab_eos"],
               inputs["lab_tokens"])
    for ours, ref in list(REF_KEYS.items())[:6]:
        torch.testing.assert_close(getattr(out, ours), t(case["hashes"][ref]), rtol=1e-10, atol=1e-12)
    for ours, ref in list(REF_KEYS.items())[6:]:
        assert checksums(getattr(out, ours)) == pytest.approx(case["res_checksums"][ref], rel=1e-10, abs=1e-12)
    objective = sum(float(j + 1) * (getattr(out, ours) * det(getattr(out, ours).shape, 0.3 * j)).sum()
                    for j, ours in enumerate(REF_KEYS))
    assert objective.item() == pytest.approx(case["objective"], rel=1e-10)
    objective.backward()
    for name, x in inputs.items():
        assert checksums(x.grad) == pytest.approx(case["grad_checksums"][name], rel=1e-9, abs=1e-12)


def test_head_test_time_hashes_match_training_forward():
    head = MATHHead(64, 8, transformer_layers=1, res_mlp_layers=1).double().eval()
    img_cls, img_tok, txt_eos, txt_tok = det((3, 64), 0), det((3, 7, 64), 1), det((3, 64), 2), det((3, 5, 64), 3)
    out = head(img_cls, img_tok, txt_eos, txt_tok, det((3, 64), 4), det((3, 4, 64), 5))
    cls_i, tok_i, cls_t, tok_t = head.hashes(img_cls, img_tok, txt_eos, txt_tok)
    for a, b in ((cls_i, out.cls_image), (tok_i, out.tok_image), (cls_t, out.cls_text), (tok_t, out.tok_text)):
        torch.testing.assert_close(a, b)


def test_token_hashing_shapes_and_length_limit():
    module = TokenHashing(64, 5, layers=1)
    assert module(torch.randn(3, 49, 64)).shape == (3, 5)
    assert module(torch.randn(1, 1, 64)).shape == (1, 5)
    with pytest.raises(ValueError, match="65 tokens"):
        module(torch.randn(1, 65, 64))


# ---------------------------------------------------------------- label sentences
FLICKR = ("animals baby bird car clouds dog female flower food indoor lake male night people plant_life portrait river "
          "sea sky structures sunset transport tree water").split()


def one_hot(columns, size):
    row = torch.zeros(size)
    row[columns] = 1
    return row


def test_label_sentence_matches_reference_annotation():
    """The reference's MIRFlickr label_t rows 0 and 7 (dataset/flickr25k/labels_annotation.txt, commas -> spaces)."""
    assert label_sentence(FLICKR, one_hot([6, 13, 15, 18, 19], 24)) == "female people portrait sky structures"
    assert label_sentence(FLICKR, one_hot([14, 23], 24)) == "plant_life water"


def test_label_sentences_rows_and_zero_row():
    names = ["person", "dining table", "cat"]
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert label_sentences(names, labels) == ["person dining table", "", "cat"]


def test_label_sentence_rejects_wrong_width():
    with pytest.raises(ValueError, match="24 classes"):
        label_sentence(FLICKR, torch.ones(3))


# ---------------------------------------------------------------- trainer
NAMES = ("circle", "square", "dining table")
TRAIN_LABELS = torch.tensor([[1.0, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1], [0, 0, 0], [1, 0, 1]])


def math_trainer(class_names=NAMES, **options):
    torch.manual_seed(0)
    trainer = Trainer(MATHConfig(output_dim=8, epochs=1, transformer_layers=1, res_mlp_layers=1, **options))
    trainer.build_parts(build_tiny_clip(), DataFacts(3, len(TRAIN_LABELS), TRAIN_LABELS, class_names), 10)
    return trainer


def tiny_batch(index):
    generator = torch.Generator().manual_seed(0)
    ids = CaptionTokenizer(32)(["a red circle", "a box and a table", "there is a dot!", "a table"][:len(index)])
    return {"image": torch.randn(len(index), 3, 64, 64, generator=generator), "text": ids,
            "text_mask": padding_mask(ids), "label": TRAIN_LABELS[index], "index": torch.tensor(index)}


def test_config_defaults_follow_the_reference():
    cfg = MATHConfig()
    assert (cfg.split, cfg.epochs, cfg.batch_size, cfg.lr, cfg.clip_lr) == ("mith", 30, 128, 1e-3, 2e-6)
    assert (cfg.weight_decay, cfg.warmup_proportion, cfg.transformer_layers, cfg.res_mlp_layers) == (0.01, 0.05, 2, 2)
    assert (cfg.hyper_intra, cfg.hyper_inter, cfg.hyper_mse, cfg.hyper_quan, cfg.hyper_contrast) == (4, 13, 5, 7, 57)
    assert cfg.temperature == 0.07 and cfg.dropout == 0.0


def test_label_sentences_of_the_training_items_are_tokenised_once():
    trainer = math_trainer()
    expected = CaptionTokenizer(32)(["circle", "square dining table", "circle square", "dining table", "",
                                     "circle dining table"])
    assert torch.equal(trainer.label_texts, expected)
    assert torch.equal(trainer.label_padding, padding_mask(expected))


def test_training_needs_class_names_and_testing_does_not():
    with pytest.raises(UserError, match="classes.txt"):
        math_trainer(class_names=None, dataset="coco")
    trainer = math_trainer(class_names=None, dataset="coco", test=True)
    (image, text), = trainer.encode(tiny_batch([0, 1])).values()
    assert image.shape == text.shape == (2, 8)


def test_training_step_reads_the_items_label_sentences_and_updates_banks_first():
    trainer = math_trainer()
    batch = tiny_batch([5, 1, 3])
    out = trainer.training_step(batch)
    assert set(out) == {"loss", "intra", "inter", "mse", "quantization", "contrastive"}
    model_out = trainer.model(batch["image"], batch["text"], batch["text_mask"], trainer.label_texts[[5, 1, 3]],
                              trainer.label_padding[[5, 1, 3]])
    for name in ("image", "text", "label"):  # the banks hold this step's global hashes (no dropout)
        torch.testing.assert_close(trainer.criterion.bank(name)[[5, 1, 3]], getattr(model_out, f"cls_{name}").detach())
    expected = trainer.criterion(model_out, batch["label"])
    assert out["loss"].item() == pytest.approx(expected["loss"].item(), rel=1e-6)
    other = tiny_batch([5, 1, 3])
    trainer.label_texts[5] = trainer.label_texts[4]  # another label sentence for item 5 changes its label hash
    trainer.label_padding[5] = trainer.label_padding[4]
    trainer.training_step(other)
    assert not torch.allclose(trainer.criterion.bank_label[5], model_out.cls_label[0].detach())


def test_optimizer_groups_backbone_at_clip_lr_heads_at_lr():
    trainer = math_trainer()
    groups = trainer.optimizer.param_groups
    backbone = {id(p) for p in trainer.backbone.parameters() if p.requires_grad}
    head = {id(p) for p in trainer.model.head.parameters()}
    assert {id(p) for p in groups[0]["params"]} == backbone and groups[0]["lr"] == 2e-6
    assert {id(p) for p in groups[1]["params"]} == head and groups[1]["lr"] == 1e-3


def test_encode_is_sign_of_global_plus_token_hashes():
    trainer = math_trainer()
    trainer.model.eval()
    batch = tiny_batch([0, 2, 4])
    (image, text), = trainer.encode(batch).values()
    cls_i, tok_i, cls_t, tok_t = trainer.model.hashes(batch["image"], batch["text"], batch["text_mask"])
    assert torch.equal(image, torch.sign(cls_i + tok_i)) and torch.equal(text, torch.sign(cls_t + tok_t))
    assert set(image.unique().tolist()) <= {-1.0, 1.0}
