"""CMCL (Wu et al., IEEE TKDE 2024): several code lengths from one model, collaborating through an auxiliary code."""
from .trainer import Trainer

__all__ = ["Trainer"]
