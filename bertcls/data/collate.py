"""Tokenized examples as a map-style dataset, and the dynamic-padding collate function."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset

from bertcls.data.encoding import EncodedSplit
from bertcls.data.sources import ROW_COLUMN

Example = tuple[np.ndarray, int, int]  # (token ids, label id or -1, source row)


class TokenizedDataset(Dataset[Example]):
    """Zero-copy view of an encoded split's Arrow columns (token ids, labels, rows).

    Token ids stay in the memory-mapped Arrow buffers: fetching an example is a slice, not a
    Python-object conversion, so data loading costs next to nothing next to the model.
    """

    def __init__(self, split: EncodedSplit) -> None:
        table = split.table.with_format("arrow")[:]
        ids = pa.concat_arrays(table.column("input_ids").chunks) if table.num_rows else None
        self.offsets = ids.offsets.to_numpy() if ids is not None else np.zeros(1, dtype=np.int64)
        self.token_ids = ids.values.to_numpy() if ids is not None else np.zeros(0, dtype=np.int64)
        self.rows = table.column(ROW_COLUMN).to_numpy()
        has_labels = "labels" in table.column_names
        self.labels = table.column("labels").to_numpy() if has_labels else np.full(len(self.rows), -1)
        self.has_labels = has_labels

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, index: int) -> Example:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.token_ids[start:end], int(self.labels[index]), int(self.rows[index])


@dataclass(frozen=True)
class DynamicPaddingCollator:
    """Pad a batch to its longest example (rounded up to ``pad_to_multiple_of``, e.g. 8 for tensor cores)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = 8

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        longest = max(len(ids) for ids, _, _ in examples)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(examples), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
        for position, (ids, _, _) in enumerate(examples):
            input_ids[position, : len(ids)] = torch.from_numpy(ids.astype(np.int64, copy=False))
            attention_mask[position, : len(ids)] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "rows": torch.tensor([row for _, _, row in examples], dtype=torch.long),
        }
        labels = [label for _, label, _ in examples]
        if labels[0] >= 0:
            batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch
