"""TwDH (Tu et al., IEEE TMM 2024): a long Hadamard-center code and fixed long-to-short transforms."""
from .trainer import Trainer

__all__ = ["Trainer"]
