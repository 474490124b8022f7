"""DNpH (Qin et al., IEEE TMM 2024): quadratic spherical mutual information between codes and label neighbourhoods."""
from .trainer import Trainer

__all__ = ["Trainer"]
