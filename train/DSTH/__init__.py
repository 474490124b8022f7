"""DSTH (Qin et al., IEEE TMM 2025): hypergraph node classification, DTSH triplets and NASA self-ranking."""
from .trainer import Trainer

__all__ = ["Trainer"]
