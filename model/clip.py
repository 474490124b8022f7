"""CLIP backbone over open_clip: OpenAI checkpoints, short text, pooled and token outputs.

`CLIPBackbone` wraps an open_clip `CLIP` model without changing its parameters, so state dicts
stay interchangeable with OpenAI's `ViT-B-32.pt`. What it adds (docs/backbone.md):

* text of `max_words` (32) tokens: the positional table is sliced and the causal mask built for
  the actual length at forward time, exactly as the hashing repos do;
* token outputs with masks: projected image tokens (patches, CLS excluded) and text tokens for
  all positions, batch-first, plus an optional key-padding mask inside the text transformer;
* a ViT patch embedding computed as one matrix product (`model.patch_embed`): cuDNN's bf16
  convolution for 32x32 non-overlapping kernels is an order of magnitude slower on an H100;
* a tiny random-init configuration (ResNet image tower, small text transformer) for the demo
  and the tests.

`python -m model.clip convert ViT-B-32.pt ViT-B-32.safetensors` turns the TorchScript archive
into a plain state dict once, for a future without TorchScript.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg, build_model_from_openai_state_dict
from torch import nn

from model.patch_embed import as_linear_patch_embed, is_patchify
from model.torchscript import read_torchscript_state_dict
from utils.checkpoint import is_torchscript_archive, refused_global
from utils.errors import UserError
from utils.text import EOT_ID, padding_mask

# Entries of OpenAI's TorchScript state dict that are not parameters.
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")

CLIP_HELP = (
    "download OpenAI's ViT-B-32.pt (https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt) and pass --clip-path, "
    "or use --backbone tiny for a randomly initialised toy model"
)


@dataclass
class TokenOutput:
    """Pooled embedding (B, D), token embeddings (B, L, D) and a padding mask (B, L), True = ignore."""

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor


class CLIPBackbone(nn.Module):
    """Image and text towers of a CLIP model, as the hashing methods use them."""

    def __init__(self, clip: nn.Module, max_words: int = 32):
        super().__init__()
        self.clip = clip
        self.max_words = max_words
        self.embed_dim = int(clip.text_projection.shape[1])
        self.image_size = _image_size(clip.visual)
        self.is_vit = hasattr(clip.visual, "proj") and clip.visual.proj is not None
        if self.is_vit:
            clip.visual.output_tokens = True
            if is_patchify(clip.visual.conv1):
                clip.visual.conv1 = as_linear_patch_embed(clip.visual.conv1)
            self.image_token_width = int(clip.visual.proj.shape[0])
        else:
            self.image_token_width = self.embed_dim
        self.text_width = int(clip.ln_final.weight.shape[0])
        if max_words > clip.positional_embedding.shape[0]:
            raise UserError(f"--max-words {max_words} exceeds the model's context length "
                            f"{clip.positional_embedding.shape[0]}")
        self.register_buffer("causal_mask", _causal_mask(max_words), persistent=False)

    # ------------------------------------------------------------------ images
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled image embedding (B, D): ln_post(CLS) @ proj for a ViT, the attention pool for a ResNet."""
        return self.encode_image_tokens(images).pooled

    def encode_image_tokens(self, images: torch.Tensor, project: bool = True) -> TokenOutput:
        """Pooled embedding and per-patch tokens (B, L, D), CLS excluded.

        ViT tokens are taken after ln_post, projected by `proj` when `project` (else width-d, as
        DPSIH uses them); ResNet tokens are the attention pool's outputs at every grid position.
        """
        visual = self.clip.visual
        images = images.to(_weight_dtype(visual))
        if self.is_vit:
            pooled, tokens = visual(images)
            if project:
                tokens = tokens @ visual.proj
        else:
            pooled, tokens = _resnet_pool_all(visual, images)
        mask = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return TokenOutput(pooled, tokens, mask)

    # ------------------------------------------------------------------- text
    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Pooled text embedding (B, D): ln_final at the EOT position (argmax id) @ text_projection."""
        return self.encode_text_tokens(ids).pooled

    def encode_text_tokens(
        self, ids: torch.Tensor, key_padding_mask: torch.Tensor | None = None, project: bool = True
    ) -> TokenOutput:
        """Pooled embedding and all L token embeddings (B, L, D).

        `key_padding_mask` (B, L, True = padding), if given, is applied inside every attention
        layer together with the causal mask (MITH); outputs at real positions are unchanged by it.
        The returned mask is `padding | EOT` (the token-aggregation mask of MITH); padding is id 0
        after the EOT position.
        """
        clip = self.clip
        length = ids.shape[1]
        if length > self.causal_mask.shape[0]:
            raise ValueError(f"text of {length} tokens is longer than max_words={self.max_words}")
        x = clip.token_embedding(ids) + clip.positional_embedding[:length]
        attn_mask = self.causal_mask[:length, :length].to(x.dtype)
        if key_padding_mask is not None:
            heads = clip.transformer.resblocks[0].attn.num_heads
            pad = torch.zeros(key_padding_mask.shape, dtype=x.dtype, device=x.device)
            pad = pad.masked_fill(key_padding_mask, float("-inf"))
            attn_mask = (attn_mask[None] + pad[:, None, :]).repeat_interleave(heads, dim=0)
        x = clip.transformer(x, attn_mask=attn_mask)
        x = clip.ln_final(x)
        eot = ids.argmax(dim=-1)
        rows = torch.arange(ids.shape[0], device=ids.device)
        pooled = x[rows, eot] @ clip.text_projection
        tokens = x @ clip.text_projection if project else x
        mask = padding_mask(ids) | (ids == EOT_ID)
        return TokenOutput(pooled, tokens, mask)


def _causal_mask(length: int) -> torch.Tensor:
    return torch.full((length, length), float("-inf")).triu_(1)


def _image_size(visual: nn.Module) -> int:
    size = visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _weight_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _resnet_pool_all(visual: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ModifiedResNet forward returning the attention pool's output at the mean token and every position."""
    x = visual.stem(images)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    pool = visual.attnpool
    x = x.flatten(2).permute(2, 0, 1)  # (HW, B, C)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0) + pool.positional_embedding[:, None, :].to(x.dtype)
    out, _ = F.multi_head_attention_forward(
        query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=visual.training, need_weights=False,
    )
    return out[0], out[1:].transpose(0, 1)


# ---------------------------------------------------------------------------------- loading
def read_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """OpenAI-format CLIP weights from a TorchScript archive, a plain state dict or a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CLIP weights not found: {path} ({CLIP_HELP})")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = _load_torch_file(path)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read CLIP weights {path}: neither a TorchScript archive nor a state dict "
                        f"({type(exc).__name__}); is the download complete? {CLIP_HELP}") from None
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = {k.removeprefix("module."): v for k, v in state["state_dict"].items()}
    for key in _NON_PARAMETER_KEYS:
        state.pop(key, None)
    if "text_projection" not in state or "token_embedding.weight" not in state:
        raise UserError(f"{path} is not an OpenAI-format CLIP checkpoint (no text_projection / token_embedding)")
    return state


def _load_torch_file(path: Path) -> dict[str, torch.Tensor]:
    """A TorchScript archive's weights (read as data, model.torchscript) or a plain state dict (weights_only)."""
    if is_torchscript_archive(path):
        return read_torchscript_state_dict(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        refused = refused_global(exc)
        if refused is None:
            raise
        raise UserError(f"{path} holds objects other than tensors and plain values ({refused}), which are never "
                        f"loaded because unpickling them can run code; {CLIP_HELP}") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def build_clip_from_state_dict(state: dict[str, torch.Tensor]) -> nn.Module:
    """An open_clip CLIP (QuickGELU, architecture inferred from the shapes) holding these weights in fp32."""
    state = dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            clip = build_model_from_openai_state_dict(dict(state), quick_gelu=True, cast_dtype=None)
        except (KeyError, RuntimeError, AssertionError) as exc:
            raise UserError(f"checkpoint does not match a CLIP architecture: {str(exc).splitlines()[0]}") from None
    clip.float()
    clip.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return clip.train()


def load_clip(path: str | Path, max_words: int = 32) -> CLIPBackbone:
    """The backbone from an OpenAI `ViT-B-32.pt` (TorchScript) or any OpenAI-format state dict file."""
    return CLIPBackbone(build_clip_from_state_dict(read_clip_state_dict(path)), max_words=max_words)


def build_tiny_clip(max_words: int = 32, image_size: int = 64, embed_dim: int = 128) -> CLIPBackbone:
    """A randomly initialised toy CLIP for the demo and the tests (about 8 M parameters, 1.8 M trained).

    Image tower: CLIP's ModifiedResNet, layers [1, 1, 1, 1], width 16 (a plain patchify ViT of this
    size learns the demo data too slowly; docs/demo.md). Text tower: 2 layers of width 128, the full
    49,408-token BPE vocabulary and a 77-row positional table, like the real model. The token
    embedding (6.3 M values, of which a caption vocabulary touches a few dozen rows) stays frozen at
    its random init: fixed random token vectors serve the text tower as well and the optimizer
    step gets ~40 % cheaper.
    """
    vision = CLIPVisionCfg(layers=(1, 1, 1, 1), width=16, image_size=image_size, head_width=32)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=128, heads=4, layers=2)
    clip = open_clip.CLIP(embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=True)
    clip.token_embedding.weight.requires_grad_(False)
    return CLIPBackbone(clip, max_words=max_words)


BACKBONES = ("ViT-B-32", "ViT-B-32-random", "tiny")


def build_random_vit_b32(max_words: int = 32) -> CLIPBackbone:
    """OpenAI's ViT-B/32 architecture (QuickGELU) with random weights: for benchmarks and pipeline checks."""
    clip = open_clip.CLIP(512, vision_cfg=CLIPVisionCfg(layers=12, width=768, patch_size=32, image_size=224),
                          text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
                          quick_gelu=True)
    return CLIPBackbone(clip, max_words=max_words)


def build_backbone(name: str, clip_path: str | Path, max_words: int = 32) -> CLIPBackbone:
    """`ViT-B-32`: load weights from `clip_path`; `ViT-B-32-random`: that architecture untrained (benchmarks);
    `tiny`: the random-init toy model."""
    if name == "tiny":
        return build_tiny_clip(max_words=max_words)
    if name == "ViT-B-32-random":
        return build_random_vit_b32(max_words=max_words)
    if name == "ViT-B-32":
        return load_clip(clip_path, max_words=max_words)
    raise UserError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")


def convert_checkpoint(src: str | Path, dst: str | Path) -> None:
    """Write the weights of `src` as a plain state dict (`.safetensors` or `.pt`, by the suffix of `dst`)."""
    state = {k: v.contiguous() for k, v in read_clip_state_dict(src).items()}
    dst = Path(dst)
    if dst.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(dst))
    else:
        torch.save(state, str(dst))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.clip", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="TorchScript ViT-B-32.pt -> plain state dict")
    conv.add_argument("src")
    conv.add_argument("dst", help="output file, .safetensors or .pt")
    args = parser.parse_args(argv)
    try:
        convert_checkpoint(args.src, args.dst)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
