"""A minimal method to copy: `cp -r train/_template train/MYMETHOD`, then edit trainer.py and README.md."""
from .trainer import Trainer

__all__ = ["Trainer"]
