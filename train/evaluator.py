"""Encode the query and database sets and compute every metric of every code set, in all four directions."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from train.history import Results
from utils.distributed import DistContext
from utils.metrics import evaluate_codes

Batch = dict[str, Any]
CodeSets = dict[str, tuple[torch.Tensor, torch.Tensor]]
Codes = dict[str, dict[str, np.ndarray]]  # code set -> q_img q_txt r_img r_txt q_l r_l


class Evaluator:
    """Encodes datasets with an `encode(batch) -> {name: (image_codes, text_codes)}` function and scores them.

    Under torchrun each process encodes a contiguous share of every set and the codes are gathered exactly
    (nothing repeated or padded); only the main process computes metrics.
    """

    def __init__(self, dist: DistContext, batch_size: int, loader_options: dict[str, Any],
                 to_device: Callable[[Batch], Batch], autocast: Callable[[], contextlib.AbstractContextManager],
                 show_progress: bool = True):
        self.dist = dist
        self.batch_size = batch_size
        self.loader_options = loader_options
        self.to_device = to_device
        self.autocast = autocast
        self.show_progress = show_progress

    def loader(self, dataset: Dataset) -> DataLoader:
        """Sequential loader over this process's share of `dataset` (all of it without torchrun)."""
        rows = self.dist.shard(len(dataset))
        return DataLoader(Subset(dataset, rows.tolist()), batch_size=self.batch_size, shuffle=False,
                          pin_memory=self.dist.device.type == "cuda", **self.loader_options)

    @torch.no_grad()
    def encode_dataset(self, encode: Callable[[Batch], CodeSets], dataset: Dataset, desc: str) -> CodeSets:
        """`encode`'s outputs (float) for every item of `dataset`, in dataset order, gathered over all processes.

        Also for methods that encode their training set between epochs (`data.train_eval`): `encode` may return
        any row pairs, not only codes.
        """
        parts: dict[str, tuple[list, list]] = {}
        bar = tqdm(self.loader(dataset), desc=desc, leave=False, disable=None if self.show_progress else True)
        for batch in bar:
            with self.autocast():
                code_sets = encode(self.to_device(batch))
            for name, (image, text) in code_sets.items():
                images, texts = parts.setdefault(name, ([], []))
                images.append(image.float())
                texts.append(text.float())
        return {name: (self.dist.gather_rows(torch.cat(images)), self.dist.gather_rows(torch.cat(texts)))
                for name, (images, texts) in parts.items()}

    def evaluate(self, encode: Callable[[Batch], CodeSets], query: Dataset, database: Dataset,
                 distance: Callable | None = None, map_k: int | None = None) -> tuple[Results, Codes]:
        """Codes of both sets and, on the main process, the metrics of each code set (`{}` elsewhere)."""
        query_codes = to_numpy(self.encode_dataset(encode, query, "encoding queries"))
        database_codes = to_numpy(self.encode_dataset(encode, database, "encoding database"))
        q_labels, r_labels = query.labels.numpy(), database.labels.numpy()
        results: Results = {}
        codes: Codes = {}
        for name in query_codes:
            codes[name] = {"q_img": query_codes[name][0], "q_txt": query_codes[name][1],
                           "r_img": database_codes[name][0], "r_txt": database_codes[name][1],
                           "q_l": q_labels, "r_l": r_labels}
            if self.dist.is_main:
                results[name] = evaluate_codes(*query_codes[name], *database_codes[name], q_labels, r_labels,
                                               distance=distance, map_k=map_k)
        return results, codes


def to_numpy(code_sets: CodeSets) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The code sets' image and text rows as NumPy arrays on the CPU."""
    return {name: (image.cpu().numpy(), text.cpu().numpy()) for name, (image, text) in code_sets.items()}
