"""Finished runs read back from their folders, grouped into one result per (method, dataset, bits).

A run folder holds summary.json (written last, so its presence marks a finished run), config.yaml (the resolved
options) and metrics.jsonl (every evaluation). Each run gives its values under two protocols:
- `sum`: the evaluation the run selected (`best`, `best_details`: I->T + T->I, or the method's own rule);
- `per-direction`: each direction's best evaluation on its own (`best_per_direction`; for runs written before it
  existed, the maxima of metrics.jsonl).
Runs of one (method, dataset, bits) that share their settings (config.yaml without paths, workers, devices and
seeds) and differ in training seed form one cell, summarised as mean and standard deviation; the newest settings
win a cell, the newest run wins a seed, and a run's own bit length wins over another code length of a
multi-length run. What lost is reported as superseded, with the reason.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dataset.catalog import DATASETS
from utils.errors import UserError

SELECTIONS = ("sum", "per-direction")
# config.yaml keys that change neither what a run learns nor how it is scored (paths, workers, devices, logging),
# and those a table shows on its own (dataset, bits, training seed).
NOT_SETTINGS = frozenset({
    "dataset", "output_dim", "train_seed", "data_dir", "data_root", "index_file", "caption_file", "label_file",
    "numclass", "cache_dir", "image_cache", "clip_path", "num_workers", "prefetch_factor", "device",
    "eval_batch_size", "map_k", "save_dir", "result_dir", "resume", "test", "pretrained", "keep_last", "save_best",
    "progress", "overwrite", "method",
})
NOT_SETTINGS_PREFIXES = ("tensorboard",)
_ABSENT = object()


def is_map_metric(name: str) -> bool:
    """mAP over the whole ranking or mAP@K."""
    return name == "mAP" or (name.startswith("mAP@") and name[4:].isdigit())


@dataclass(eq=False)
class Run:
    """One run's result for one code length (a multi-length run gives one Run per code set)."""

    method: str
    dataset: str
    bits: int
    folder: Path
    primary: bool  # trained for these bits, not another code length of a multi-length run
    mtime: float
    train_seed: int | None
    epochs: int | None
    settings: dict[str, Any]
    selected: dict[str, dict[str, float]]  # direction -> metric -> value at the evaluation the run selected
    per_direction: dict[str, dict[str, float]]  # metric -> direction -> best value over the run's evaluations

    def value(self, selection: str, metric: str, direction: str) -> float | None:
        """The run's `metric` for `direction` under `selection` (None if not recorded)."""
        if selection == "sum":
            return self.selected.get(direction, {}).get(metric)
        return self.per_direction.get(metric, {}).get(direction)


@dataclass(frozen=True)
class Stat:
    """Mean over a cell's runs, their sample standard deviation (None for one run) and their number."""

    mean: float
    std: float | None
    n: int


@dataclass
class Cell:
    """The runs of one (method, dataset, bits) with one set of settings, one per training seed."""

    runs: list[Run]

    def stat(self, selection: str, metric: str, direction: str) -> Stat | None:
        """Mean ± standard deviation over the runs; None if a run did not record the value."""
        values = [run.value(selection, metric, direction) for run in self.runs]
        if not values or any(v is None for v in values):
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return Stat(statistics.fmean(values), std, len(values))

    @property
    def settings(self) -> dict[str, Any]:
        return self.runs[0].settings

    @property
    def epochs(self) -> list[int]:
        return sorted({run.epochs for run in self.runs if run.epochs is not None})

    @property
    def seeds(self) -> list[int | None]:
        return [run.train_seed for run in self.runs]


@dataclass
class Superseded:
    """A run left out of its cell and why."""

    run: Run
    reason: str


@dataclass
class Collection:
    cells: dict[tuple[str, str, int], Cell] = field(default_factory=dict)
    superseded: list[Superseded] = field(default_factory=list)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError("config.yaml is not a mapping")
    return config


def run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The options of config.yaml that can change a run's result."""
    return {key: value for key, value in config.items()
            if key not in NOT_SETTINGS and not key.startswith(NOT_SETTINGS_PREFIXES)}


def _log_maxima(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    """code set -> metric -> direction -> maximum over the evaluations in metrics.jsonl."""
    maxima: dict[str, dict[str, dict[str, float]]] = {}
    if not path.is_file():
        return maxima
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        for code_set, directions in json.loads(line)["results"].items():
            for direction, metrics in directions.items():
                for metric, value in metrics.items():
                    if is_map_metric(metric) and value is not None:
                        best = maxima.setdefault(code_set, {}).setdefault(metric, {})
                        best[direction] = max(best.get(direction, value), value)
    return maxima


def _per_direction(recorded: dict | None, fallback: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """`best_per_direction` ({metric: {direction: {"value", "epoch"}}}) as metric -> direction -> value."""
    if recorded is None:
        return fallback
    return {metric: {d: float(entry["value"]) for d, entry in directions.items()}
            for metric, directions in recorded.items()}


def _selected(best: dict[str, float], details: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    selected = {d: {m: float(v) for m, v in metrics.items() if is_map_metric(m) and v is not None}
                for d, metrics in details.items()}
    for direction, value in best.items():
        selected.setdefault(direction, {})["mAP"] = float(value)
    return selected


def _protocol_seed(dataset: str, config: dict[str, Any]) -> int | None:
    """The seed of the run's split protocol, the default of `seed` (None if the protocol is not known)."""
    info = DATASETS.get(dataset)
    if info is None or config.get("split") not in info.protocols:
        return None
    return info.protocols[config["split"]].seed


def _seed(summary: dict[str, Any], config: dict[str, Any]) -> int | None:
    """The training seed: `train_seed`, else (runs from before it existed) `seed`, which set both, else the seed of
    the split protocol, which was the default of both."""
    for key in ("train_seed", "seed"):
        for source in (summary, config):
            if source.get(key) is not None:
                return int(source[key])
    return _protocol_seed(str(summary.get("dataset")), config)


def read_runs(summary_path: Path) -> list[Run]:
    """The runs of one run folder: its own bit length and, for a multi-length run, its other code lengths."""
    folder = summary_path.parent
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        config = _read_config(folder / "config.yaml")
        method, dataset, bits = summary["method"], summary["dataset"], int(summary["bits"])
        settings = run_settings(config)
        if "seed" in settings and settings["seed"] is None:  # the default: the protocol's seed
            settings["seed"] = _protocol_seed(dataset, config)
        common = dict(method=method, dataset=dataset, folder=folder, mtime=summary_path.stat().st_mtime,
                      train_seed=_seed(summary, config), settings=settings,
                      epochs=summary.get("epochs", config.get("epochs")))
        needs_log = "best_per_direction" not in summary or any(
            "best_per_direction" not in code_set for code_set in summary.get("code_sets", {}).values())
        maxima = _log_maxima(folder / "metrics.jsonl") if needs_log else {}
        runs = [Run(bits=bits, primary=True,
                    selected=_selected(summary["best"], summary.get("best_details", {})),
                    per_direction=_per_direction(summary.get("best_per_direction"),
                                                 maxima.get(str(summary.get("code_set", bits)), {})),
                    **common)]
        for name, code_set in summary.get("code_sets", {}).items():
            if name.isdigit() and int(name) != bits:
                runs.append(Run(bits=int(name), primary=False,
                                selected=_selected(code_set["best"], code_set.get("best_details", {})),
                                per_direction=_per_direction(code_set.get("best_per_direction"),
                                                             maxima.get(name, {})),
                                **common))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as exc:
        raise UserError(f"{folder} is not a readable run folder ({type(exc).__name__}: {exc}); remove it or fix "
                        "it") from None
    return runs


def settings_key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def differing_settings(settings: dict[str, dict[str, Any]]) -> dict[str, list[tuple[Any, list[str]]]]:
    """Keys whose values differ between the labelled settings: key -> [(value, labels with that value)].

    Labels that lack a key are left out of that key's comparison (method-specific options)."""
    keys = sorted({key for values in settings.values() for key in values})
    differing = {}
    for key in keys:
        groups: dict[str, tuple[Any, list[str]]] = {}
        for label, values in settings.items():
            if key in values:
                shown = json.dumps(values[key], sort_keys=True, default=str)
                groups.setdefault(shown, (values[key], []))[1].append(label)
        if len(groups) > 1:
            differing[key] = sorted(groups.values(), key=lambda group: _order(group[0]))
    return differing


def _order(value: Any) -> tuple:
    """Numbers in numeric order before everything else in text order."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if is_number else (1, 0, str(value))


def _group(runs: list[Run], collection: Collection) -> Cell:
    """The cell of one (method, dataset, bits) from its runs; the others go to collection.superseded."""
    primary = [run for run in runs if run.primary]
    candidates = primary or runs
    for run in runs:
        if run not in candidates:
            collection.superseded.append(Superseded(run, "another code length of a multi-length run, where a run "
                                                         "trained for that length exists"))
    newest = max(candidates, key=lambda run: run.mtime)
    same = [run for run in candidates if settings_key(run.settings) == settings_key(newest.settings)]
    for run in candidates:
        if run not in same:
            keys = ", ".join(sorted(key for key in {*newest.settings, *run.settings}
                                    if newest.settings.get(key, _ABSENT) != run.settings.get(key, _ABSENT)))
            collection.superseded.append(Superseded(run, f"{run.method} {run.dataset} {run.bits}: settings "
                                                         f"({keys}) other than the cell's newest run"))
    by_seed: dict[int | None, Run] = {}
    for run in sorted(same, key=lambda run: run.mtime):
        if run.train_seed in by_seed:
            collection.superseded.append(Superseded(by_seed[run.train_seed], "replaced by a newer run with the "
                                                                             "same training seed"))
        by_seed[run.train_seed] = run
    return Cell(sorted(by_seed.values(), key=lambda run: (run.train_seed is None, run.train_seed or 0)))


def collect(folders: list[Path]) -> Collection:
    """Every run below `folders`, one cell per (method, dataset, bits)."""
    runs: dict[tuple[str, str, int], list[Run]] = {}
    for path in sorted({path for folder in folders for path in folder.rglob("summary.json")}):
        for run in read_runs(path):
            runs.setdefault((run.method, run.dataset, run.bits), []).append(run)
    collection = Collection()
    for key, cell_runs in runs.items():
        collection.cells[key] = _group(cell_runs, collection)
    return collection
