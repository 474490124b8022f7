"""DPSIH (AAAI 2026): n polysemic embeddings per item, set similarity = best pair, multi-embedding codes."""
from .trainer import Trainer

__all__ = ["Trainer"]
