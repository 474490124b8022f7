"""DNPH (Huo et al., ACM TOMM 2024): neighbourhood-aware class proxies with a uniform-distribution constraint."""
from .trainer import Trainer

__all__ = ["Trainer"]
