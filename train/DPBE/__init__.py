"""DPBE (ACM MM 2025): hash heads with a diagonal Laplace posterior, codes averaged over weight samples."""
from .trainer import Trainer

__all__ = ["Trainer"]
