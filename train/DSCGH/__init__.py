"""DSCGH (Sui et al., ESWA 2026): fixed hash centres, a cross-modal triplet loss and per-epoch discrete codes."""
from .trainer import Trainer

__all__ = ["Trainer"]
