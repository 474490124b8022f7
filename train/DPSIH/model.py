"""DPSIH's model: CLIP global and token features -> a tanh hash head plus n attention-pooled residuals (DSIE)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.clip import CLIPBackbone
from model.heads import LinearTanhHead


class DSIE(nn.Module):
    """Deep semantic instance embedding: n attention poolings of the tokens become sigmoid residuals added to
    the global hash embedding, then LayerNorm and L2 normalisation of each of the n rows.

    a = softmax_tokens(W2 tanh(W1 T)) (B, L, n); P = aᵀ T (B, n, d_in); R = Dropout(sigmoid(fc(P))) (B, n, K);
    E = normalize(LayerNorm(e + R)) (B, n, K). W1, W2, fc: xavier_uniform, fc bias 0.
    """

    def __init__(self, embeds: int, d_in: int, bits: int, dropout: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(d_in, d_in // 2, bias=False)
        self.w2 = nn.Linear(d_in // 2, embeds, bias=False)
        self.fc = nn.Linear(d_in, bits)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(bits)
        for layer in (self.w1, self.w2, self.fc):
            nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(self.fc.bias)

    def attention(self, tokens: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights (B, L, n) over the L tokens (masked positions get 0)."""
        logits = self.w2(torch.tanh(self.w1(tokens)))
        if padding_mask is not None:
            logits = logits.masked_fill(padding_mask.unsqueeze(-1), float("-inf"))
        return logits.softmax(dim=1)

    def forward(self, hashed: torch.Tensor, tokens: torch.Tensor,
                padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """hashed (B, K), tokens (B, L, d_in) -> embeddings E (B, n, K), attention (B, L, n), residuals R (B, n, K)."""
        attn = self.attention(tokens, padding_mask)
        residual = self.dropout(torch.sigmoid(self.fc(attn.transpose(1, 2) @ tokens)))
        embeds = F.normalize(self.norm(hashed.unsqueeze(1) + residual), dim=-1)
        return embeds, attn, residual


class DPSIHModel(nn.Module):
    """CLIP, one `Linear -> Dropout -> tanh` head per modality on the pooled features, one DSIE per modality.

    Image tokens: the patch tokens before the projection (width 768 for ViT-B/32), after ln_post — applied a
    second time when `double_ln_post` (the reference's behaviour); a ResNet backbone gives its attention-pool
    outputs instead, layer-normalised (no affine) when `resnet_token_norm`, since a ResNet has no ln_post.
    Text tokens: all positions after ln_final, before the projection; `mask_padding` keeps the padding
    positions out of the text attention pooling (the reference pools over them).
    """

    def __init__(self, backbone: CLIPBackbone, bits: int, embeds: int, head_dropout: float = 0.2,
                 dropout: float = 0.0, double_ln_post: bool = True, mask_padding: bool = False,
                 head_init: str = "kaiming", resnet_token_norm: bool = True):
        super().__init__()
        self.backbone = backbone
        dim = backbone.embed_dim
        self.image_head = LinearTanhHead(dim, bits, head_dropout, init=head_init)
        self.text_head = LinearTanhHead(dim, bits, head_dropout, init=head_init)
        self.image_dsie = DSIE(embeds, backbone.image_token_width, bits, dropout)
        self.text_dsie = DSIE(embeds, backbone.text_width, bits, dropout)
        self.double_ln_post = double_ln_post and backbone.is_vit
        self.resnet_token_norm = resnet_token_norm and not backbone.is_vit
        self.mask_padding = mask_padding

    def image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.backbone.encode_image_tokens(images, project=False)
        tokens = self.backbone.clip.visual.ln_post(out.tokens) if self.double_ln_post else out.tokens
        if self.resnet_token_norm:
            tokens = F.layer_norm(tokens, tokens.shape[-1:])
        return out.pooled, tokens

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled, tokens = self.image_features(images)
        return self.image_dsie(self.image_head(pooled), tokens)

    def encode_text(self, texts: torch.Tensor,
                    text_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.backbone.encode_text_tokens(texts, project=False)
        return self.text_dsie(self.text_head(out.pooled), out.tokens, text_mask if self.mask_padding else None)

    def forward(self, images: torch.Tensor, texts: torch.Tensor, text_mask: torch.Tensor | None = None):
        """((E_i, attn_i, R_i), (E_t, attn_t, R_t)) with E (B, n, K) unit rows."""
        return self.encode_image(images), self.encode_text(texts, text_mask)
