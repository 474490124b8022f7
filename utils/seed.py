"""Seeding and RNG state capture, so runs are repeatable and --resume continues exactly."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from utils.errors import UserError


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global generator's state, for a checkpoint: tensors and plain values only (loads with weights_only).

    NumPy's legacy generator state (an array of 624 uint32 words) is kept as an int64 tensor.
    """
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"] = {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                            "pos": int(numpy_state["state"]["pos"])}
    numpy_state["has_gauss"] = int(numpy_state["has_gauss"])
    numpy_state["gauss"] = float(numpy_state["gauss"])
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    try:
        numpy_state = dict(state["numpy"])
        numpy_state["state"] = {"key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32),
                                "pos": numpy_state["state"]["pos"]}
        python_state = state["python"]
        random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
        np.random.set_state(numpy_state)
        torch.set_rng_state(state["torch"])
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise UserError(f"the checkpoint's random-generator state is damaged ({type(exc).__name__}); "
                        "resume from another last.pt") from None
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
