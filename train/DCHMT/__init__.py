"""DCHMT / DCMHT (Tu et al., ACM MM 2022): pair-softmax "selecting" hash bits."""
from .trainer import Trainer

__all__ = ["Trainer"]
