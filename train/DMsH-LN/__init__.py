"""DMsH-LN (Wu et al., Neurocomputing 2024): multi-similarity hashing with label-guided positives."""
from .trainer import Trainer

__all__ = ["Trainer"]
