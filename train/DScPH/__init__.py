"""DScPH (Qin et al., TMM 2025): class proxies with self-weighted penalties, bit-variance quantisation."""
from .trainer import Trainer

__all__ = ["Trainer"]
