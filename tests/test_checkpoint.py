"""Checkpoint files: what save_checkpoint writes loads with weights_only=True; what load_checkpoint refuses."""
import os
import random

import numpy as np
import pytest
import torch

from utils.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from utils.errors import UserError
from utils.seed import rng_state, seed_everything, set_rng_state


class CreatesADirectory:
    """Unpickling this object calls os.mkdir(path): a stand-in for any code a crafted pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def resume_payload() -> dict:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return {"method": "M", "config": {"epochs": 2, "lr": 1e-3, "milestones": [1, 2], "name": None},
            "epochs_done": 1, "global_step": 4, "model": model.state_dict(), "extra": {"centers": torch.ones(2)},
            "optimizers": [optimizer.state_dict()], "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
            "rng": rng_state(), "facts": {"num_classes": 3, "class_names": None},
            "history": {"best": {"score": -float("inf"), "epoch": None}, "last": {"64": {"i2t": {"mAP": 0.5}}}}}


def test_a_resume_checkpoint_loads_with_weights_only(tmp_path):
    seed_everything(3)
    np.random.normal()  # NumPy keeps a cached Gaussian: part of the state
    save_checkpoint(resume_payload(), tmp_path / "last.pt")
    torch.load(tmp_path / "last.pt", weights_only=True)
    payload = load_checkpoint(tmp_path, require=("optimizers", "rng"))
    expected = (random.random(), np.random.normal(), np.random.rand(), torch.rand(1).item())
    set_rng_state(payload["rng"])
    assert (random.random(), np.random.normal(), np.random.rand(), torch.rand(1).item()) == expected


def test_save_refuses_what_weights_only_cannot_load(tmp_path):
    with pytest.raises(TypeError, match="numpy"):
        save_checkpoint({"method": "M", "config": {}, "model": {}, "extra": {"bank": np.zeros(3)}},
                        tmp_path / "best.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    target = tmp_path / "created"
    torch.save({"format": FORMAT, "method": "M", "config": {}, "model": {"w": CreatesADirectory(target)}},
               tmp_path / "best.pt")
    with pytest.raises(UserError, match="mkdir") as error:
        load_checkpoint(tmp_path / "best.pt")
    assert not target.exists() and "\n" not in str(error.value)


@pytest.mark.parametrize("content, message", [
    ([1, 2], "not a checkpoint of this framework"),
    ({"weight": torch.zeros(2)}, "not a checkpoint of this framework"),
    ({"format": FORMAT, "method": "M", "config": {}}, "no model entry"),
    ({"format": FORMAT, "method": "M", "config": {}, "model": torch.zeros(2)}, "not a dict"),
    ({"format": FORMAT, "method": "M", "config": {}, "model": {}, "optimizers": []}, "no scaler, rng entry"),
])
def test_wrong_contents_are_one_line_errors(tmp_path, content, message):
    torch.save(content, tmp_path / "last.pt")
    require = ("optimizers", "scaler", "rng") if isinstance(content, dict) and "optimizers" in content else ()
    with pytest.raises(UserError, match=message) as error:
        load_checkpoint(tmp_path / "last.pt", require=require)
    assert "\n" not in str(error.value)


def test_damaged_rng_state_is_a_user_error():
    with pytest.raises(UserError, match="random-generator state"):
        set_rng_state({"python": (3, (1, 2), None), "numpy": {}, "torch": torch.zeros(1)})
