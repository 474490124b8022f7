"""DSSH (IEEE TKDE 2026): codes as von Mises-Fisher distributions around class proxies."""
from .trainer import Trainer

__all__ = ["Trainer"]
