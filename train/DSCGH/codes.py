"""DSCGH's discrete codes of the training items, updated once per epoch from the epoch's network outputs.

State (N training items, K bits, C classes): B (N, K) ±1 codes, the quantization targets of the next epoch;
H_img, H_txt (N, K) the latest tanh outputs of every item; an auxiliary C_aux (N, K) with orthonormal columns and a
multiplier D (N, K) of the constraint B = C_aux; a penalty γ. At the end of an epoch, with the training labels Y:

    R     = (YᵀY + I)⁻¹ Yᵀ B                                  (C, K) ridge regression of the codes on the labels
    B     = sign(Y R + γ C_aux - D + (H_img + H_txt) / 2)
    C_aux = orth(B + D / γ)
    D     = D + γ (B - C_aux)
    γ     = 1.05 γ₀ (reference: set once, stays) or 1.05 γ (`gamma_rule="geometric"`)

orth(M) = U Vᵀ from the thin SVD M = U S Vᵀ (`"polar"`: the nearest matrix with orthonormal columns); the reference
multiplies U by V instead (`"reference"`: `U @ Vh.T`, still orthonormal columns). Initial state (reference order,
one generator): B = sign(randn), H_img = randn, H_txt = randn, C_aux = B, D = 0, γ = γ₀.
"""
from __future__ import annotations

import torch
from torch import nn

GAMMA_RULES = ("reference", "geometric")
ORTHOGONALIZATIONS = ("polar", "reference")


def orthonormal_factor(matrix: torch.Tensor, how: str = "polar") -> torch.Tensor:
    """(N, K) matrix with orthonormal columns from the thin SVD of `matrix` (see the module docstring)."""
    u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    if how == "polar":
        return u @ vh
    if how == "reference":
        return u @ vh.T
    raise ValueError(f"unknown orthogonalization {how!r}; choose from {ORTHOGONALIZATIONS}")


class DiscreteCodes(nn.Module):
    """B, H_img, H_txt, C_aux, D as buffers and γ as extra state (all in the criterion's checkpoint)."""

    def __init__(self, num_items: int, bits: int, generator: torch.Generator, *, gamma: float = 0.01,
                 gamma_rule: str = "reference", orthogonalization: str = "polar"):
        super().__init__()
        if gamma_rule not in GAMMA_RULES:
            raise ValueError(f"unknown gamma rule {gamma_rule!r}; choose from {GAMMA_RULES}")
        if orthogonalization not in ORTHOGONALIZATIONS:
            raise ValueError(f"unknown orthogonalization {orthogonalization!r}; choose from {ORTHOGONALIZATIONS}")
        self.initial_gamma = gamma
        self.gamma_rule = gamma_rule
        self.orthogonalization = orthogonalization
        codes = torch.randn(num_items, bits, generator=generator).sign()
        self.register_buffer("codes", codes)
        self.register_buffer("image_outputs", torch.randn(num_items, bits, generator=generator))
        self.register_buffer("text_outputs", torch.randn(num_items, bits, generator=generator))
        self.register_buffer("auxiliary", codes.clone())
        self.register_buffer("multiplier", torch.zeros(num_items, bits))
        self.gamma = gamma

    def targets(self, index: torch.Tensor) -> torch.Tensor:
        """The current codes B of the items `index` (the quantization targets)."""
        return self.codes[index]

    @torch.no_grad()
    def record(self, index: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> None:
        """Store the items' latest tanh outputs (detached), for the update at the end of the epoch."""
        self.image_outputs[index] = image.detach().to(self.image_outputs.dtype)
        self.text_outputs[index] = text.detach().to(self.text_outputs.dtype)

    @torch.no_grad()
    def update(self, labels: torch.Tensor) -> None:
        """The end-of-epoch step for the training labels Y (N, C), rows in item order."""
        labels = labels.to(self.codes.dtype)
        gamma = self.gamma
        eye = torch.eye(labels.shape[1], dtype=labels.dtype, device=labels.device)
        regression = torch.linalg.solve(labels.T @ labels + eye, labels.T @ self.codes)
        self.codes.copy_((labels @ regression + gamma * self.auxiliary - self.multiplier
                          + 0.5 * (self.image_outputs + self.text_outputs)).sign())
        self.auxiliary.copy_(orthonormal_factor(self.codes + self.multiplier / gamma, self.orthogonalization))
        self.multiplier.add_(gamma * (self.codes - self.auxiliary))
        self.gamma = 1.05 * (self.initial_gamma if self.gamma_rule == "reference" else gamma)

    def get_extra_state(self) -> dict:
        return {"gamma": self.gamma}

    def set_extra_state(self, state: dict) -> None:
        self.gamma = float(state["gamma"])
