"""IDGH's intra-class distributions: estimation (IDE), neighbour-guided refinement (NDR), synthesis (DAG).

Every class c keeps a running mean and a diagonal variance of the tanh codes of each modality. An update reads
the codes of the whole training set: per class, the batch statistics are merged into the running ones with
weight α = max(n_c / (N_c + n_c), 1 − momentum) (N_c the count seen so far); rare classes (n_c < 40) then pull
their variances towards the count-weighted global variance and a Gaussian-kernel average of their nearest
classes' variances. Synthetic codes shift each code along its classes' standard deviations with normal noise.
"""
from __future__ import annotations

import torch
from torch import nn


class IntraClassDistribution(nn.Module):
    """Running per-class mean and variance of the image and text codes (buffers: checkpointed with the criterion)."""

    def __init__(self, num_classes: int, bits: int, momentum: float = 0.8, beta: float = 0.1, gamma: float = 0.1,
                 neighbors: int = 25, sigma_mean: float = 1.0, sigma_var: float = 4.0, rare_count: int = 40):
        super().__init__()
        self.momentum, self.beta, self.gamma, self.neighbors = momentum, beta, gamma, neighbors
        self.sigma_mean, self.sigma_var, self.rare_count = sigma_mean, sigma_var, rare_count
        for name in ("mean_image", "mean_text", "var_image", "var_text", "neighbor_var_image", "neighbor_var_text"):
            self.register_buffer(name, torch.zeros(num_classes, bits))
        self.register_buffer("amount", torch.zeros(num_classes))

    def class_weights(self, counts: torch.Tensor) -> torch.Tensor:
        """Refinement weight per class: 1 / (1 + ln(1 + β(n − 1 + 1e-8))) for 0 < n < rare_count, else 0."""
        weight = 1 / (1 + torch.log(1 + self.beta * (counts - 1 + 1e-8)))
        return torch.where((counts > 0) & (counts < self.rare_count), weight, 0)

    @torch.no_grad()
    def update(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> None:
        """Merge the statistics of the codes of the whole training set (N, K) with labels (N, C) 0/1."""
        dtype = self.var_image.dtype
        image, text, labels = image.to(dtype), text.to(dtype), labels.to(dtype)
        counts = labels.sum(dim=0)
        estimated = counts > 1  # a class seen once keeps its statistics and its count
        for c in estimated.nonzero().flatten().tolist():
            rows = labels[:, c] > 0
            alpha = (counts[c] / (self.amount[c] + counts[c])).clamp(min=1 - self.momentum)
            for codes, mean, var in ((image, self.mean_image, self.var_image), (text, self.mean_text, self.var_text)):
                batch_mean = codes[rows].mean(dim=0)
                batch_var = (codes[rows] - batch_mean).square().mean(dim=0)
                delta = mean[c] - batch_mean
                var[c] = (1 - alpha) * var[c] + alpha * batch_var + alpha * (1 - alpha) * delta.square()
                mean[c] = (1 - alpha) * mean[c] + alpha * batch_mean
            self.amount[c] += counts[c]
        if not estimated.any():
            return
        self._refine(counts, estimated)

    def _refine(self, counts: torch.Tensor, estimated: torch.Tensor) -> None:
        """Neighbour variances of the estimated classes, then the calibration of every class (NDR)."""
        weights = counts[estimated]
        global_image = (self.var_image[estimated] * weights[:, None]).sum(0) / weights.sum()
        global_text = (self.var_text[estimated] * weights[:, None]).sum(0) / weights.sum()
        present = (counts > 0).nonzero().flatten()
        if len(present) > 1:
            self._neighbor_variances(present, counts[present], estimated[present])
        w = self.class_weights(counts)[:, None]
        self.var_image.copy_((1 - w) * self.var_image + w * self.gamma * global_image
                             + w * (1 - self.gamma) * self.neighbor_var_image)
        self.var_text.copy_((1 - w) * self.var_text + w * self.gamma * global_text
                            + w * (1 - self.gamma) * self.neighbor_var_text)

    def _neighbor_variances(self, present: torch.Tensor, counts: torch.Tensor, estimated: torch.Tensor) -> None:
        """For each estimated class, the kernel-weighted mean variance of its nearest present classes.

        Distances between class a's image statistics and class b's text statistics (means and variances),
        each min-max normalised over the present classes; neighbours: the `neighbors` smallest summed
        distances (b ≠ a); kernel n_b · exp(−d_mean² / 2σ_m² − d_var² / 2σ_v²).
        """
        def normalised(x: torch.Tensor) -> torch.Tensor:
            return (x - x.min()) / (x.max() - x.min() + 1e-8)

        var_image, var_text = self.var_image[present], self.var_text[present]
        d_mean = normalised(torch.cdist(self.mean_image[present], self.mean_text[present]))
        d_var = normalised(torch.cdist(var_image, var_text))
        adjacency = d_mean + d_var
        adjacency.fill_diagonal_(float("inf"))
        k = min(self.neighbors, len(present) - 1)
        nearest = adjacency.topk(k, dim=1, largest=False).indices
        for i in estimated.nonzero().flatten().tolist():
            j = nearest[i]
            kernel = counts[j] * torch.exp(-d_mean[i, j].square() / (2 * self.sigma_mean ** 2)
                                           - d_var[i, j].square() / (2 * self.sigma_var ** 2))
            self.neighbor_var_image[present[i]] = (var_image[j] * kernel[:, None]).sum(0) / kernel.sum()
            self.neighbor_var_text[present[i]] = (var_text[j] * kernel[:, None]).sum(0) / kernel.sum()

    def sample_variances(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) per-sample variances, image and text: the mean over the sample's classes; 0 without a class."""
        y = labels.to(self.var_image.dtype)
        count = y.sum(dim=1, keepdim=True).clamp(min=1)
        return (y @ self.var_image) / count, (y @ self.var_text) / count


def draw_noise(copies: int, batch: int, bits: int, *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """Standard normal draws (copies, B, K) for the image and the text codes, drawn in the reference's order
    (image 0, text 0, image 1, text 1, ...); with the global generator this equals the reference's randn_like."""
    draws = [torch.randn(batch, bits, generator=generator, device=device, dtype=dtype) for _ in range(2 * copies)]
    return torch.stack(draws[0::2]), torch.stack(draws[1::2])


def synthesize(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, var_image: torch.Tensor,
               var_text: torch.Tensor, lam: float, noise_image: torch.Tensor, noise_text: torch.Tensor,
               scale: str = "std") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic codes h + √λ · σ ⊙ ε for each of the `len(noise_image)` copies, and their labels (repeated).

    `var_*` are the per-sample variances (B, K) (`IntraClassDistribution.sample_variances`), `noise_*` the
    draws (copies, B, K). `scale="std"`: σ = √var for every copy (a draw from N(h, λ·diag(var))).
    `scale="reference"`: the reference re-applies the square root per copy, σ_k = var^(1 / 2^(k+1)).
    Gradients flow into `image` and `text`; the variances are constants.
    """
    if scale not in ("std", "reference"):
        raise ValueError(f"unknown synthesis scale {scale!r}; choose std or reference")
    copies_image, copies_text = [], []
    root = lam ** 0.5
    std_image, std_text = var_image, var_text
    for k in range(len(noise_image)):
        if scale == "std":
            std_image, std_text = var_image.sqrt(), var_text.sqrt()
        else:
            std_image, std_text = std_image.sqrt(), std_text.sqrt()
        copies_image.append(image + root * std_image * noise_image[k])
        copies_text.append(text + root * std_text * noise_text[k])
    return torch.cat(copies_image), torch.cat(copies_text), labels.repeat(len(noise_image), 1)
