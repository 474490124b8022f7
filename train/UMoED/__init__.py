"""UMoED (ACM ToMM 2025): one Soft-MoE transformer decoder shared by both modalities, symbol codes."""
from .trainer import Trainer

__all__ = ["Trainer"]
