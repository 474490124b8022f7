"""DNPH (Huo et al., ACM TOMM 2024): neighbourhood-aware class proxies with a uniform-distribution constraint."""
from .trainer import Trainer

# The folder is DNPH-TOMM, not DNPH: "DNPH" and DNpH (IEEE TMM 2024) differ only in case, and would share one
# folder (and one result folder) on a case-insensitive file system. `--method DNPH` still finds this method.
ALIASES = ("DNPH",)

__all__ = ["Trainer"]
