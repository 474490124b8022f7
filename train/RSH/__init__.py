"""RSH (ICML 2026): hash codes and uncertainty vectors, triplets on a self-reflective similarity (noisy labels)."""
from .trainer import Trainer

__all__ = ["Trainer"]
