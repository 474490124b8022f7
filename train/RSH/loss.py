"""RSH's loss: triplets on the self-reflective similarity of codes and uncertainties, and an L1 quantization term.

The self-reflective similarity of two samples (Double Feature Representation: a hash code s and an
uncertainty vector u each) is

    S(i, j) = 1 − (1 − cos(s_i, r_j)) · exp(−(‖u_i + v_j + ε‖ + γ) / (τ ‖ŝ_i − r̂_j + ε‖)),

with ŝ, r̂ the L2-normalised codes and ε = 1e-6 added to every coordinate of the differences, as
`torch.pairwise_distance` does in the reference. A large joint uncertainty ‖u_i + v_j‖ pulls S towards 1
(the semantic discrepancy 1 − cos is weakened). Triplet hinges relu(S_an − S_ap + m) are averaged over the
triplets where they are positive.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from train.common import float32_region, label_similarity

EPS = 1e-6  # torch.pairwise_distance's default, added to each coordinate of x − y


def _pairwise_norm(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, M) matrix of ‖x_i − y_j + ε‖₂ (ε on every coordinate, like torch.pairwise_distance)."""
    return (x[:, None, :] - y[None, :, :] + EPS).norm(dim=-1)


def self_reflective_similarity(codes: torch.Tensor, uncertainty: torch.Tensor, ref_codes: torch.Tensor | None = None,
                               ref_uncertainty: torch.Tensor | None = None, *, gamma: float = 3.0,
                               tau: float = 9.0) -> torch.Tensor:
    """(N, M) similarity S(i, j) between rows of `codes` and of `ref_codes` (default: `codes` itself).

    `codes` are the tanh head outputs (normalised here), `uncertainty` the raw uncertainty head outputs.
    """
    s = F.normalize(codes, dim=1)
    r = s if ref_codes is None else F.normalize(ref_codes, dim=1)
    v = uncertainty if ref_uncertainty is None else ref_uncertainty
    discrepancy = 1 - s @ r.T
    distance = _pairwise_norm(s, r)
    joint_uncertainty = _pairwise_norm(uncertainty, -v)  # ‖u_i + v_j + ε‖
    return 1 - discrepancy * torch.exp(-(joint_uncertainty + gamma) / (tau * distance))


def triplet_mask(labels: torch.Tensor, cross: bool) -> torch.Tensor:
    """valid[a, p, n]: p shares a class with a, n shares none. Intra-modal: p ≠ a; cross-modal: p = a allowed."""
    shares = label_similarity(labels)
    positives = shares if cross else label_similarity(labels, diagonal=False)
    return positives[:, :, None] & ~shares[:, None, :]


def triplet_loss(similarity: torch.Tensor, valid: torch.Tensor, margin: float = 0.25) -> torch.Tensor:
    """Mean of relu(S[a, n] − S[a, p] + margin) over the valid triplets where it is > 0; 0 if there is none."""
    hinge = F.relu(similarity[:, None, :] - similarity[:, :, None] + margin)
    active = valid & (hinge > 0)
    return (hinge * active).sum() / active.sum().clamp(min=1)


def quantization_loss(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """mean |h − sign(h)| of the image codes plus the same of the text codes (tanh outputs, not normalised)."""
    return (image - image.sign()).abs().mean() + (text - text.sign()).abs().mean()


def rsh_loss(image: torch.Tensor, image_uncertainty: torch.Tensor, text: torch.Tensor,
             text_uncertainty: torch.Tensor, labels: torch.Tensor, *, gamma: float = 3.0, tau: float = 9.0,
             margin: float = 0.25, quantization_weight: float = 0.03) -> dict[str, torch.Tensor]:
    """The RSH training loss on one (global) batch of training labels (noisy ones under label noise).

    loss = ¼ [T(I, I) + T(I → T) + T(T → I) + T(T, T)] + quantization_weight · Q, where T(X → Y) is the
    triplet loss on S(X, Y) (anchors from X, positives and negatives from Y; the paired sample is a
    positive in the cross-modal terms) and Q the quantization term. Computed in at least float32.
    """
    with float32_region(image, image_uncertainty, text, text_uncertainty) as (img, img_u, txt, txt_u):
        y = labels.to(img.dtype)
        intra, cross = triplet_mask(y, cross=False), triplet_mask(y, cross=True)
        similarity = dict(gamma=gamma, tau=tau)
        terms = {
            "image_image": triplet_loss(self_reflective_similarity(img, img_u, **similarity), intra, margin),
            "image_text": triplet_loss(self_reflective_similarity(img, img_u, txt, txt_u, **similarity), cross,
                                       margin),
            "text_image": triplet_loss(self_reflective_similarity(txt, txt_u, img, img_u, **similarity), cross,
                                       margin),
            "text_text": triplet_loss(self_reflective_similarity(txt, txt_u, **similarity), intra, margin),
        }
        triplet = sum(terms.values()) / 4
        quantization = quantization_loss(img, txt)
        loss = triplet + quantization_weight * quantization
    return {"loss": loss, "triplet": triplet, "quantization": quantization, **terms}
