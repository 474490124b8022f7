"""The label network of the unified reference: multi-hot labels -> K-dim label codes tanh(α·fc2(relu(fc1(y))))."""
from __future__ import annotations

import math

import torch
from torch import nn


class LabelNet(nn.Module):
    """fc1 Linear(C, ⌊(C+K)/2⌋) -> ReLU -> fc2 Linear(⌊(C+K)/2⌋, K) -> tanh(α x), α = √(epoch + 1).

    PyTorch's default initialisation; the reference never trains it (see loss.py), so it stays at init.
    """

    def __init__(self, num_classes: int, bits: int):
        super().__init__()
        hidden = (num_classes + bits) // 2
        self.fc1 = nn.Linear(num_classes, hidden)
        self.fc2 = nn.Linear(hidden, bits)
        self.alpha = 1.0

    def set_alpha(self, epoch: int) -> None:
        """α = √(epoch + 1), epoch 0-based (the reference sets it at the start of every epoch)."""
        self.alpha = math.sqrt(epoch + 1.0)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * self.fc2(torch.relu(self.fc1(labels.float()))))
