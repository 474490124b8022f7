"""The ViT patch embedding as a matrix product: same outputs, gradients and state dict as the convolution."""
import pytest
import torch
from torch import nn

from model.clip import build_random_vit_b32
from model.patch_embed import LinearPatchEmbed, as_convolution, as_linear_patch_embed, is_patchify


@pytest.mark.parametrize("patch,size,bias", [((4, 4), (8, 12), False), ((2, 3), (6, 9), True)])
def test_outputs_and_gradients_equal_the_convolution(patch, size, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, kernel_size=patch, stride=patch, bias=bias)
    linear = as_linear_patch_embed(conv)
    images = torch.randn(2, 3, *size, requires_grad=True)
    expected = conv(images)
    got = linear(images)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-6)
    upstream = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [images, conv.weight], upstream)
    got_grads = torch.autograd.grad(got, [images, linear.weight], upstream)
    for g, e in zip(got_grads, expected_grads):
        assert torch.allclose(g, e, atol=1e-5)


def test_shares_the_parameters_and_keeps_the_state_dict():
    conv = nn.Conv2d(3, 4, 2, stride=2, bias=False).eval()
    linear = as_linear_patch_embed(conv)
    assert linear.weight is conv.weight and linear.bias is None and not linear.training
    assert linear.state_dict().keys() == conv.state_dict().keys()
    back = as_convolution(linear)
    assert type(back) is nn.Conv2d and back.weight is conv.weight and not back.training


@pytest.mark.parametrize("conv", [nn.Conv2d(3, 4, 3, stride=2), nn.Conv2d(3, 4, 2, stride=2, padding=1),
                                  nn.Conv2d(4, 4, 2, stride=2, groups=2), nn.Conv2d(3, 4, 2, stride=2, dilation=2)])
def test_overlapping_or_padded_convolutions_are_refused(conv):
    assert not is_patchify(conv)
    with pytest.raises(ValueError, match="not a patch embedding"):
        as_linear_patch_embed(conv)


def test_image_not_a_multiple_of_the_patch_is_an_error():
    with pytest.raises(ValueError, match="not a multiple"):
        as_linear_patch_embed(nn.Conv2d(3, 4, 4, stride=4))(torch.zeros(1, 3, 8, 10))


def test_bf16_autocast_runs_the_product_in_bf16():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 4, stride=4, bias=False)
    images = torch.randn(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = as_linear_patch_embed(conv)(images)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), conv(images), atol=0.05, rtol=0.02)


def test_vit_b32_backbone_uses_it_with_openai_parameter_names():
    backbone = build_random_vit_b32()
    assert isinstance(backbone.clip.visual.conv1, LinearPatchEmbed)
    assert backbone.clip.state_dict()["visual.conv1.weight"].shape == (768, 3, 32, 32)
