"""DDBH (Qin et al., TCSVT 2025): boundary-preserving pairwise likelihood with adaptive base points."""
from .trainer import Trainer

__all__ = ["Trainer"]
