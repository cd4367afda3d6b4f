"""Tokenized examples as a map-style dataset: a zero-copy view of an encoded split."""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
from torch.utils.data import Dataset

from bertcls.data.encoding import EncodedSplit
from bertcls.data.sources import ROW_COLUMN

Example = dict[str, np.ndarray | int]


class TokenizedDataset(Dataset[Example]):
    """Zero-copy view of an encoded split's numeric Arrow columns.

    List columns (``input_ids``, ``token_type_ids``, token-level ``labels``, multi-hot ``labels``) stay in
    the memory-mapped Arrow buffers as one flat array plus offsets: fetching an example is a slice, not a
    Python-object conversion. Scalar columns (``labels`` of a single-label task, ``row``) are plain arrays.
    Text columns (the words of a token task) stay in ``table`` for the prediction writer.
    """

    def __init__(self, split: EncodedSplit) -> None:
        self.table: datasets.Dataset = split.table
        self.meta = split.meta
        arrow = split.table.with_format("arrow")[:]
        self.lists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.scalars: dict[str, np.ndarray] = {}
        for name in arrow.column_names:
            column = arrow.column(name)
            kind = column.type
            if pa.types.is_list(kind) or pa.types.is_large_list(kind):
                if not _is_numeric(kind.value_type):
                    continue
                merged = pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], type=kind)
                values = merged.flatten().to_numpy(zero_copy_only=False)
                offsets = merged.offsets.to_numpy() - merged.offsets[0].as_py()
                self.lists[name] = (offsets, values)
            elif _is_numeric(kind):
                self.scalars[name] = column.to_numpy()
        self.rows = self.scalars.pop(ROW_COLUMN)
        self.has_labels = "labels" in self.lists or "labels" in self.scalars

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.lists["input_ids"][0])

    def __getitem__(self, index: int) -> Example:
        example: Example = {"rows": int(self.rows[index])}
        for name, (offsets, values) in self.lists.items():
            example[name] = values[offsets[index] : offsets[index + 1]]
        for name, values in self.scalars.items():
            example[name] = values[index]
        return example


def _is_numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
