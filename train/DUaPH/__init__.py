"""DUaPH (Han et al., ACM TOMM 2026): multi-similarity hashing with PFE-style uncertainty modules."""
from .trainer import Trainer

__all__ = ["Trainer"]
