"""The evaluations of a run: the best by the selection score, the last, and each direction's best.

Two protocols of the field are kept side by side (docs/evaluation.md): `best` is one evaluation chosen by a
score (default I->T + T->I mAP), `per_direction` holds, for each metric and direction, the maximum over all
evaluations and its epoch (reference trainers that keep each direction's best separately).
"""
from __future__ import annotations

import math
from typing import Any

from utils.metrics import DIRECTION_LABELS, DIRECTIONS

Results = dict[str, dict[str, dict[str, float]]]  # code set -> direction -> metric -> value


class EvaluationHistory:
    """Best (by score), last and per-direction best evaluations; plain data, checkpointed with the run."""

    def __init__(self, primary: str, per_direction_metrics: tuple[str, ...] = ("mAP",)):
        self.primary = primary
        self.per_direction_metrics = per_direction_metrics
        self.best: dict[str, Any] = {"score": -math.inf, "epoch": None, "results": None}
        self.last: Results | None = None
        self.evaluated_epochs: list[int] = []
        # code set -> metric -> direction -> {"value", "epoch"}
        self.per_direction: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}

    def add(self, epoch: int, results: Results, score: float) -> bool:
        """Record an evaluation; True when it is the new best by `score`."""
        self.last = results
        self.evaluated_epochs.append(epoch)
        for code_set, directions in results.items():
            for metric in self.per_direction_metrics:
                table = self.per_direction.setdefault(code_set, {}).setdefault(metric, {})
                for direction in DIRECTIONS:
                    value = directions[direction].get(metric)
                    if value is None:
                        continue
                    known = table.get(direction)
                    if known is None or value > known["value"]:
                        table[direction] = {"value": value, "epoch": epoch}
        if score > self.best["score"]:
            self.best = {"score": score, "epoch": epoch, "results": results}
            return True
        return False

    def evaluations_since(self, epoch: int | None) -> int:
        """How many evaluations came after `epoch` (all of them for None)."""
        return sum(1 for e in self.evaluated_epochs if epoch is None or e > epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "last": self.last, "per_direction": self.per_direction,
                "evaluated_epochs": self.evaluated_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.last = state["best"], state["last"]
        self.per_direction = state.get("per_direction", {})
        self.evaluated_epochs = list(state.get("evaluated_epochs", []))

    def progress_line(self, epoch: int, improved: bool) -> str:
        """One log line: this evaluation's mAP per direction and the best so far."""
        last = self.last[self.primary]
        maps = "  ".join(f"{DIRECTION_LABELS[d]} {last[d]['mAP']:.4f}" for d in DIRECTIONS)
        best = self.best["results"][self.primary]
        return (f"epoch {epoch}: mAP {maps}  (best epoch {self.best['epoch']}: I->T {best['i2t']['mAP']:.4f} "
                f"T->I {best['t2i']['mAP']:.4f}){'  *' if improved else ''}")


def map_table(results: Results, code_set: str) -> dict[str, float]:
    """mAP over the whole ranking per direction of one code set."""
    return {d: results[code_set][d]["mAP"] for d in DIRECTIONS}


def format_result_table(summary: dict[str, Any]) -> str:
    """The run's result as a small text table (best and last evaluation, chance level)."""
    head = f"{summary['method']} on {summary['dataset']}, {summary['code_set']} bits (best epoch {summary['best_epoch']})"
    rows = [f"{'mAP':<8}" + "".join(f"{DIRECTION_LABELS[d]:>9}" for d in DIRECTIONS)]
    for key in ("best", "last"):
        rows.append(f"{key:<8}" + "".join(f"{summary[key][d]:>9.4f}" for d in DIRECTIONS))
    rows.append(f"{'chance':<8}" + f"{summary['chance_mAP']:>9.4f}" * 4)
    return "\n".join([head, *rows])
