"""The datasets the framework knows by name: default folder, class count and split sizes."""
from __future__ import annotations

from dataclasses import dataclass, field

from utils.errors import UserError


@dataclass(frozen=True)
class SplitSizes:
    """Query and training set sizes of one protocol; the rest of the data is the database."""

    query: int
    train: int
    seed: int


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    num_pairs: int  # the standard count, for checks and messages
    protocols: dict[str, SplitSizes] = field(default_factory=dict)

    @property
    def default_dir(self) -> str:
        return f"dataset/{self.name}"


# "standard": QinLab / DCHMT / kalenforn defaults; "mith": the MITH and CMCL run scripts (seed 1).
DATASETS: dict[str, DatasetInfo] = {
    "coco": DatasetInfo("coco", 80, 122_218, {
        "standard": SplitSizes(5000, 10000, 1814), "mith": SplitSizes(5000, 10000, 1)}),
    "flickr25k": DatasetInfo("flickr25k", 24, 20_015, {
        "standard": SplitSizes(5000, 10000, 1814), "mith": SplitSizes(2000, 10000, 1)}),
    "nuswide": DatasetInfo("nuswide", 21, 195_834, {
        "standard": SplitSizes(5000, 10000, 1814), "mith": SplitSizes(2100, 10500, 1)}),
    "demo": DatasetInfo("demo", 12, 2500, {
        "standard": SplitSizes(250, 2000, 1814), "mith": SplitSizes(250, 2000, 1)}),
}

ALIASES = {"flickr": "flickr25k", "mirflickr": "flickr25k", "mirflickr25k": "flickr25k", "nus": "nuswide",
           "nus-wide": "nuswide", "mscoco": "coco", "ms-coco": "coco"}

PROTOCOLS = ("standard", "mith")


def resolve_dataset(name: str) -> DatasetInfo:
    """The dataset called `name` (aliases such as `flickr` and `mirflickr` accepted)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DATASETS:
        known = ", ".join(list(DATASETS) + sorted(ALIASES))
        raise UserError(f"unknown dataset {name!r}; choose one of: {known}")
    return DATASETS[key]
