"""MITH (Liu et al., ACM MM 2023): global and local concept hashes, memory-bank likelihoods."""
from .trainer import Trainer

__all__ = ["Trainer"]
