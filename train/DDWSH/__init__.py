"""DDWSH (Cheng et al., IEEE TMM 2026): margin loss with class betas and distance-weighted negative sampling."""
from .trainer import Trainer

__all__ = ["Trainer"]
