"""DIMCH (IEEE TIP 2025): cross-modal hashing via diverse instances matching."""
from .trainer import Trainer

__all__ = ["Trainer"]
