"""DPSaH (Wu et al., EAAI 2026): quadruplet losses and a classifier on bit-noised codes."""
from .trainer import Trainer

__all__ = ["Trainer"]
