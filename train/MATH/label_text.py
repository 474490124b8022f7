"""MATH's label "modality": each item's class names as one sentence."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def label_sentence(class_names: Sequence[str], label: torch.Tensor) -> str:
    """The names of the item's classes in class (column) order, joined by single spaces, no prompt
    template: MIRFlickr row with female, people, portrait, sky, structures -> "female people portrait sky
    structures". A row without classes gives the empty sentence (CLIP then reads only SOT and EOT)."""
    if label.ndim != 1 or len(label) != len(class_names):
        raise ValueError(f"a label row of {len(class_names)} classes expected, got shape {tuple(label.shape)}")
    return " ".join(class_names[c] for c in torch.nonzero(label > 0).flatten().tolist())


def label_sentences(class_names: Sequence[str], labels: torch.Tensor) -> list[str]:
    """`label_sentence` for every row of `labels` (N, C)."""
    return [label_sentence(class_names, row) for row in labels]
