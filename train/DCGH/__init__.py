"""DCGH (Chen et al., Applied Sciences 2025): class proxies with pairwise and variance constraints."""
from .trainer import Trainer

__all__ = ["Trainer"]
