"""IDGH (CVPR 2026): class code distributions, neighbour-refined variances, synthetic codes, ranking triplets."""
from .trainer import Trainer

__all__ = ["Trainer"]
