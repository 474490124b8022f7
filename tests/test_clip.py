"""Backbone: loading real checkpoint formats (built tiny here), 32-token text, token outputs, errors."""
import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from torch import nn

from model.clip import build_backbone, build_tiny_clip, convert_checkpoint, load_clip, read_clip_state_dict
from model.clip import main as clip_main
from model.torchscript import read_torchscript_state_dict
from utils.errors import UserError
from utils.text import CaptionTokenizer, padding_mask


def tiny_vit_clip() -> nn.Module:
    """An OpenAI-architecture CLIP (ViT, QuickGELU) small enough for a test; head widths of 64 as OpenAI's."""
    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=2, width=64, patch_size=16, image_size=32)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=2)
    return open_clip.CLIP(64, vision_cfg=vision, text_cfg=text, quick_gelu=True).eval()


class OpenAIArchive(nn.Module):
    """The layout of OpenAI's TorchScript ViT-B-32.pt: the CLIP parameters plus three non-parameter entries."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        for name, child in clip.named_children():
            self.add_module(name, child)
        for name, param in clip.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.register_buffer("input_resolution", torch.tensor(32))
        self.register_buffer("context_length", torch.tensor(77))
        self.register_buffer("vocab_size", torch.tensor(49408))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)


@pytest.fixture(scope="module")
def reference():
    return tiny_vit_clip()


@pytest.fixture(scope="module")
def checkpoints(reference, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    torch.save(reference.state_dict(), folder / "state_dict.pt")
    torch.save({k: v.half() for k, v in reference.state_dict().items()}, folder / "fp16.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(OpenAIArchive(reference), torch.ones(1, 3, 32, 32)).save(str(folder / "ViT-tiny.pt"))
    return folder


def texts():
    return CaptionTokenizer(32)(["a red circle and a blue star", "there is a box!", ""])


@pytest.mark.parametrize("file", ["ViT-tiny.pt", "state_dict.pt"])
def test_load_both_formats_reproduces_the_model(reference, checkpoints, file):
    backbone = load_clip(checkpoints / file)
    images = torch.randn(2, 3, 32, 32)
    ids = texts()
    assert backbone.is_vit and backbone.image_size == 32 and backbone.embed_dim == 64
    # atol 1e-5: the backbone's patch embedding is a matrix product, the reference's a convolution (other sum order)
    assert torch.allclose(backbone.encode_image(images), reference.encode_image(images), atol=1e-5)
    padded = F.pad(ids, (0, 77 - 32))  # the 77-token path of open_clip gives identical pooled text features
    assert torch.allclose(backbone.encode_text(ids), reference.encode_text(padded), atol=1e-6)
    assert all(p.dtype == torch.float32 for p in backbone.parameters())
    assert backbone.training


def test_torchscript_archive_has_the_extra_openai_entries(checkpoints):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = torch.jit.load(str(checkpoints / "ViT-tiny.pt")).state_dict().keys()
    assert {"input_resolution", "context_length", "vocab_size"} <= set(keys)


class ScriptedParts(nn.Module):
    """What a scripted archive holds besides parameters: buffers, an fp16 parameter, a plain tensor attribute
    (not part of the state dict), a missing bias, module containers and plain values."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.norm = nn.BatchNorm2d(4)
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.scale = nn.Parameter(torch.randn(4).half())
        self.attn_mask = torch.full((2, 2), float("-inf")).triu(1)
        self.sizes = {"a": 1}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x)).mean((2, 3))
        for block in self.blocks:
            x = block(x)
        return x * self.scale.float() + self.attn_mask.sum() + self.sizes["a"]


@pytest.mark.parametrize("export", ["script", "trace"])
def test_torchscript_weights_are_read_as_jit_load_reads_them(tmp_path, export):
    torch.manual_seed(0)
    module = ScriptedParts()
    module(torch.randn(2, 3, 6, 6))  # moves the BatchNorm buffers off their initial values
    path = tmp_path / "archive.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.jit.script(module) if export == "script" else torch.jit.trace(module, torch.ones(1, 3, 6, 6))
        exported.save(str(path))
        expected = torch.jit.load(str(path)).state_dict()
    state = read_torchscript_state_dict(path)
    assert list(state) == list(expected)
    for key, value in expected.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


def test_clip_archive_is_read_without_torchscript(checkpoints, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = torch.jit.load(str(checkpoints / "ViT-tiny.pt")).state_dict()

    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load runs the archive's code")

    monkeypatch.setattr(torch.jit, "load", refuse)
    state = read_clip_state_dict(checkpoints / "ViT-tiny.pt")
    assert set(state) == set(expected) - {"input_resolution", "context_length", "vocab_size"}
    assert all(torch.equal(state[key], expected[key]) for key in state)
    load_clip(checkpoints / "ViT-tiny.pt")


def test_fp16_state_dict_loads_as_fp32(checkpoints):
    backbone = load_clip(checkpoints / "fp16.pt")
    assert all(p.dtype == torch.float32 for p in backbone.parameters())


def test_convert_to_safetensors_round_trip(reference, checkpoints, tmp_path):
    out = tmp_path / "vit.safetensors"
    assert clip_main(["convert", str(checkpoints / "ViT-tiny.pt"), str(out)]) == 0
    images = torch.randn(1, 3, 32, 32)
    assert torch.allclose(load_clip(out).encode_image(images), reference.encode_image(images), atol=1e-5)
    convert_checkpoint(checkpoints / "ViT-tiny.pt", tmp_path / "vit.pt")
    assert torch.allclose(load_clip(tmp_path / "vit.pt").encode_image(images), reference.encode_image(images),
                          atol=1e-5)


def test_vit_tokens_are_projected_patches(reference, checkpoints):
    backbone = load_clip(checkpoints / "state_dict.pt")
    images = torch.randn(2, 3, 32, 32)
    out = backbone.encode_image_tokens(images)
    assert out.tokens.shape == (2, 4, 64) and out.pooled.shape == (2, 64)
    reference.visual.output_tokens = True
    _, raw = reference.visual(images)
    reference.visual.output_tokens = False
    assert torch.allclose(out.tokens, raw @ reference.visual.proj, atol=1e-5)
    unprojected = backbone.encode_image_tokens(images, project=False).tokens
    assert unprojected.shape == (2, 4, 64) and torch.allclose(unprojected, raw, atol=1e-5)


def test_text_tokens_pooling_and_masks():
    backbone = build_tiny_clip()
    ids = texts()
    out = backbone.encode_text_tokens(ids)
    assert out.tokens.shape == (3, 32, 128)
    eot = ids.argmax(dim=1)
    assert torch.allclose(out.pooled, out.tokens[torch.arange(3), eot], atol=1e-6)
    assert torch.equal(out.mask, padding_mask(ids) | (ids == 49407))
    assert not out.mask[:, 0].any()  # SOT stays visible


def test_key_padding_mask_leaves_real_positions_unchanged():
    backbone = build_tiny_clip()
    ids = texts()
    plain = backbone.encode_text_tokens(ids)
    masked = backbone.encode_text_tokens(ids, key_padding_mask=padding_mask(ids))
    real = ~padding_mask(ids)
    assert torch.allclose(plain.tokens[real], masked.tokens[real], atol=1e-6)
    assert torch.allclose(plain.pooled, masked.pooled, atol=1e-6)


def test_padding_mask_is_positional_not_id_zero():
    ids = torch.tensor([[49406, 0, 320, 49407, 0, 0]])  # id 0 (the byte "!") can be a real token before EOT
    assert padding_mask(ids).tolist() == [[False, False, False, False, True, True]]


def test_tiny_backbone_shapes_and_resnet_tokens():
    backbone = build_tiny_clip()
    images = torch.randn(2, 3, 64, 64)
    out = backbone.encode_image_tokens(images)
    assert not backbone.is_vit
    assert out.pooled.shape == (2, 128) and out.tokens.shape == (2, 4, 128)
    assert torch.allclose(out.pooled, backbone.clip.encode_image(images), atol=1e-5)
    assert not backbone.clip.token_embedding.weight.requires_grad


@pytest.mark.parametrize("content, message", [(None, "not found"), (b"not a checkpoint", "neither a TorchScript")])
def test_bad_weight_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "ViT-B-32.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        build_backbone("ViT-B-32", path)


def test_state_dict_that_is_not_clip(tmp_path):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an OpenAI-format CLIP"):
        load_clip(tmp_path / "other.pt")


def test_text_longer_than_max_words_is_rejected():
    with pytest.raises(UserError, match="context length"):
        build_tiny_clip(max_words=100)


def test_random_vit_b32_is_the_openai_architecture():
    """The benchmark backbone has exactly the shapes of OpenAI's ViT-B/32 (its state dict loads as one)."""
    from model.clip import build_clip_from_state_dict, build_random_vit_b32

    backbone = build_random_vit_b32()
    state = backbone.clip.state_dict()
    assert state["visual.conv1.weight"].shape == (768, 3, 32, 32) and state["positional_embedding"].shape == (77, 512)
    rebuilt = build_clip_from_state_dict(state)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in backbone.clip.parameters())
    assert backbone.image_size == 224 and backbone.embed_dim == 512
