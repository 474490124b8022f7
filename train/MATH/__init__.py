"""MATH: MITH-style global and token hashes with a third, label-sentence modality during training."""
from .trainer import Trainer

__all__ = ["Trainer"]
