"""DAIH (Wu et al., Information Fusion 2026): class and auxiliary (k-means) embeddings with adversarial
decorrelation, margin losses on distance-weighted triplets."""
from .trainer import Trainer

__all__ = ["Trainer"]
