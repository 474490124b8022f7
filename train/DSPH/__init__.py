"""DSPH (Huo et al., TCSVT 2024): class proxies shared by both modalities."""
from .trainer import Trainer

__all__ = ["Trainer"]
