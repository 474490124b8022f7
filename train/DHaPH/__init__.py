"""DHaPH (Huo et al., TKDE 2024): self-paced contrastive loss and hierarchy-aware hyperbolic proxies."""
from .trainer import Trainer

__all__ = ["Trainer"]
