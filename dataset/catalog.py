"""The datasets the framework knows by name: default folder, class names and split sizes."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dataset.demo import CLASSES as DEMO_CLASSES
from utils.errors import UserError

# label columns as dataset/make_coco.py writes them: the 80 categories in ascending COCO category id
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
# dataset/make_flickr25k.py: the 24 concept lists in alphabetical order (the order of the release's all_labels.txt)
MIRFLICKR_CONCEPTS = (
    "animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake", "male", "night",
    "people", "plant_life", "portrait", "river", "sea", "sky", "structures", "sunset", "transport", "tree", "water")
# how many of the 20,015 standard pairs carry each concept (all distinct): they identify the columns of a file
# whose concepts are in another order (the QinLab/DCHMT generator took the order the file system listed them in)
MIRFLICKR_COUNTS = (2647, 179, 644, 986, 3230, 581, 4614, 1554, 813, 6320, 704, 4743, 2243, 7848, 7413, 2740, 811,
                    1133, 6818, 8463, 1840, 2450, 3981, 2885)
# dataset/make_nuswide.py: the 21 most frequent concepts, alphabetical
NUSWIDE_CONCEPTS = (
    "animal", "beach", "buildings", "clouds", "flowers", "grass", "lake", "mountain", "ocean", "person", "plants",
    "reflection", "road", "rocks", "sky", "snow", "sunset", "tree", "vehicle", "water", "window")


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
    class_names: tuple[str, ...] = ()  # in the label-column order of our generator
    class_counts: tuple[int, ...] = ()  # items per class in the standard set, where known and all distinct

    @property
    def default_dir(self) -> str:
        return f"dataset/{self.name}"

    def names_for(self, labels: np.ndarray) -> tuple[str, ...] | None:
        """Names of the columns of a label matrix that comes without a class list (a reference repo's file).

        Where the per-class counts of the standard set are known and the columns' counts are exactly those in
        some order, each column gets the name of its count; otherwise the catalog's order is taken when the
        number of columns matches, and None when it does not.
        """
        if labels.shape[1] != len(self.class_names):
            return None
        counts = labels.sum(axis=0).astype(np.int64).tolist()
        if self.class_counts and sorted(counts) == sorted(self.class_counts):
            by_count = dict(zip(self.class_counts, self.class_names))
            return tuple(by_count[c] for c in counts)
        return self.class_names


# "standard": QinLab / DCHMT / kalenforn defaults; "mith": the MITH and CMCL run scripts (seed 1).
DATASETS: dict[str, DatasetInfo] = {
    "coco": DatasetInfo("coco", 80, 122_218, {
        "standard": SplitSizes(5000, 10000, 1814), "mith": SplitSizes(5000, 10000, 1)}, COCO_CLASSES),
    "flickr25k": DatasetInfo("flickr25k", 24, 20_015, {
        "standard": SplitSizes(5000, 10000, 1814), "mith": SplitSizes(2000, 10000, 1)}, MIRFLICKR_CONCEPTS,
        MIRFLICKR_COUNTS),
    "nuswide": DatasetInfo("nuswide", 21, 195_834, {
        "standard": SplitSizes(5000, 10000, 1814), "mith": SplitSizes(2100, 10500, 1)}, NUSWIDE_CONCEPTS),
    "demo": DatasetInfo("demo", 12, 2500, {
        "standard": SplitSizes(250, 2000, 1814), "mith": SplitSizes(250, 2000, 1)}, DEMO_CLASSES),
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
