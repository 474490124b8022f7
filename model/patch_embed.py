"""A ViT's patch embedding computed as one matrix product instead of a convolution.

CLIP's ViT embeds patches with `Conv2d(3, width, kernel_size=P, stride=P)`: the kernel never
overlaps, so the layer is a linear map of each flattened P x P x 3 patch. cuDNN has no good
algorithm for such large non-sliding kernels in reduced precision; on an H100 in bf16 that one
convolution made a ViT-B/32 training step about ten times slower than fp32 (docs/performance.md).
`LinearPatchEmbed` keeps the convolution's parameters (same names and shapes, so state dicts
are unchanged) and runs the product through cuBLAS.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LinearPatchEmbed(nn.Conv2d):
    """A non-overlapping `Conv2d` (kernel == stride, no padding, dilation or groups) evaluated as `F.linear`."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = images.shape
        ph, pw = self.kernel_size
        if height % ph or width % pw:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {ph}x{pw}")
        grid_h, grid_w = height // ph, width // pw
        patches = (images.reshape(batch, channels, grid_h, ph, grid_w, pw)
                   .permute(0, 2, 4, 1, 3, 5)
                   .reshape(batch, grid_h * grid_w, channels * ph * pw))
        out = F.linear(patches, self.weight.reshape(self.out_channels, -1), self.bias)  # (B, grid², width)
        return out.transpose(1, 2).reshape(batch, self.out_channels, grid_h, grid_w)


def is_patchify(conv: nn.Module) -> bool:
    """Whether `conv` is a plain non-overlapping 2-D convolution that `LinearPatchEmbed` computes exactly."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == conv.stride and conv.padding == (0, 0)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


def as_linear_patch_embed(conv: nn.Conv2d) -> LinearPatchEmbed:
    """A `LinearPatchEmbed` sharing `conv`'s parameter tensors (nothing is copied or re-initialised)."""
    if not is_patchify(conv):
        raise ValueError(f"{conv} overlaps, pads, dilates or groups: it is not a patch embedding")
    return _sharing_parameters(conv, LinearPatchEmbed)


def as_convolution(embed: LinearPatchEmbed) -> nn.Conv2d:
    """The plain `nn.Conv2d` sharing `embed`'s parameters (to time the convolution against the product)."""
    return _sharing_parameters(embed, nn.Conv2d)


def _sharing_parameters(conv: nn.Conv2d, cls: type[nn.Conv2d]) -> nn.Conv2d:
    out = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, bias=conv.bias is not None,
              device="meta")
    out.weight, out.bias = conv.weight, conv.bias
    return out.train(conv.training)
