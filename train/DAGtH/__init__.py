"""DAGtH (Zhu et al., ESWA 2025): adaptive-margin triplets, then a Householder rotation before sign (reconstruction)."""
from .trainer import Trainer

__all__ = ["Trainer"]
