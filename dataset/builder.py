"""From config to datasets: load the files, apply the split protocol, build the three PairDatasets."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dataset.catalog import DatasetInfo, SplitSizes
from dataset.demo import ensure_demo
from dataset.label_noise import LabelNoise
from dataset.mat import PairTable, load_pair_table
from dataset.pairs import PairDataset
from dataset.splits import Split, split_rows
from dataset.transforms import eval_transform, train_transform
from utils.errors import UserError
from utils.text import CaptionTokenizer


@dataclass
class DataBundle:
    """The loaded table, its split and one dataset per subset.

    `train_eval` holds the training items as evaluation items (eval transform, `eval_caption`; the training
    labels): for methods that encode the training set between epochs (e.g. to fit a post-hoc rotation or refresh
    a code bank). Item i of `train`, `train_eval` and `retrieval` is the same pair (the training set is the first
    part of the database).
    """

    table: PairTable
    split: Split
    train: PairDataset
    query: PairDataset
    retrieval: PairDataset
    train_eval: PairDataset

    @property
    def num_classes(self) -> int:
        return self.table.num_classes

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """One name per label column (label-column order), or None where the dataset does not name its classes."""
        return self.table.class_names


def resolve_split_sizes(info: DatasetInfo, protocol: str, query_num: int | None, train_num: int | None,
                        seed: int | None) -> SplitSizes:
    """The protocol's sizes and seed, each overridden where the user gave a value."""
    base = info.protocols[protocol]
    return SplitSizes(query=query_num or base.query, train=train_num or base.train,
                      seed=base.seed if seed is None else seed)


def load_table(info: DatasetInfo, data_dir: str | None, index_file: str | None = None,
               caption_file: str | None = None, label_file: str | None = None, data_root: str | None = None,
               numclass: int | None = None, progress: bool = True) -> PairTable:
    """The dataset's files (the demo data is generated on first use) with the class count checked.

    Class names come from a classes.txt beside the label file, else from the catalog (:meth:`DatasetInfo.names_for`).
    """
    folder = Path(data_dir or info.default_dir)
    if info.name == "demo" and not (index_file or caption_file or label_file):
        ensure_demo(folder, num_items=info.num_pairs, progress=progress)
    table = load_pair_table(folder, index_file, caption_file, label_file, data_root)
    if numclass is not None and numclass != table.num_classes:
        raise UserError(f"--numclass {numclass} does not match the {table.num_classes} label columns of the "
                        f"{info.name} label file; drop --numclass (it is read from the file)")
    if table.class_names is None:
        table.class_names = info.names_for(table.labels)
    return table


def build_datasets(table: PairTable, sizes: SplitSizes, image_size: int, max_words: int, train_kind: str,
                   eval_caption: str, label_noise: LabelNoise | None = None) -> DataBundle:
    """Split the table and wrap each subset: training items draw a random caption, evaluation items (query,
    database and the training set's `train_eval` view) take `eval_caption`.

    `label_noise` corrupts the labels of the training items only (`train` and `train_eval`); the database holds
    the same pairs with their clean labels, and the query set is untouched.
    """
    split = split_rows(len(table), sizes.query, sizes.train, sizes.seed)
    tokenizer = CaptionTokenizer(max_words)
    evaluate = eval_transform(image_size)
    noise = label_noise or LabelNoise(0.0)
    train_labels = noise.fixed_labels(table.labels[split.train], len(table), sizes.seed)
    return DataBundle(
        table=table,
        split=split,
        train=PairDataset(table, split.train, train_transform(image_size, train_kind), tokenizer, "random",
                          labels=train_labels, batch_label_noise=noise.batch_noise()),
        query=PairDataset(table, split.query, evaluate, tokenizer, eval_caption),
        retrieval=PairDataset(table, split.retrieval, evaluate, tokenizer, eval_caption),
        train_eval=PairDataset(table, split.train, evaluate, tokenizer, eval_caption, labels=train_labels),
    )
