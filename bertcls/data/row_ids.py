"""Ids of the predict split's rows: the values of ``data.id_column``, or else the 0-based row numbers.

The ids travel with the encoded split (and its cache entry) as a text column of JSON values, one per example
(every window of a long sentence carries its row's id): JSON keeps an id's type (``7`` stays a number,
``"007"`` a string), and a text column is not fed to the model (``TokenizedDataset`` keeps numeric columns).
"""

from __future__ import annotations

import json
from typing import Any

import datasets
import numpy as np
import pandas as pd

from bertcls.data.dataset import TokenizedDataset
from bertcls.data.labels import MAX_ROWS_SHOWN
from bertcls.data.sources import ROW_COLUMN
from bertcls.data.validation import InvalidRows

ID_COLUMN = "source_id"


def invalid_ids(frame: pd.DataFrame, column: str) -> list[InvalidRows]:
    """Rows without an id, and rows whose id repeats (all of them), for the up-front checks."""
    values = frame[column]
    repeated = (values.notna() & values.duplicated(keep=False)).to_numpy()
    shown = list(dict.fromkeys(values[repeated].tolist()))[:MAX_ROWS_SHOWN]
    unset = "or leave data.id_column unset to use row numbers"
    return [
        InvalidRows(f"no id in data.id_column '{column}'", values.isna().to_numpy(), f"give every row an id, {unset}"),
        InvalidRows(
            f"repeated ids {shown} in data.id_column '{column}'",
            repeated,
            f"the ids name the output rows, so they must be unique: fix those rows, {unset}",
        ),
    ]


def encoded_ids(frame: pd.DataFrame, column: str) -> dict[int, str]:
    """Row -> JSON-encoded id from ``frame[column]`` (checked by ``invalid_ids``)."""
    encoded = [json.dumps(value, ensure_ascii=False, default=str) for value in frame[column].tolist()]
    return dict(zip(frame[ROW_COLUMN].tolist(), encoded, strict=True))


def with_ids(table: datasets.Dataset, ids: dict[int, str]) -> datasets.Dataset:
    """``table`` with each example's row id in ``ID_COLUMN``."""
    return table.add_column(ID_COLUMN, [ids[row] for row in table[ROW_COLUMN]])


class RowIds:
    """The output ``id`` of each row of an encoded predict split (looked up by row, in any order)."""

    def __init__(self, dataset: TokenizedDataset) -> None:
        self.ids = None
        if ID_COLUMN in dataset.table.column_names:
            self.rows, first = np.unique(dataset.rows, return_index=True)
            self.ids = dataset.table.with_format("arrow")[:].column(ID_COLUMN).take(first)

    def __call__(self, row: int) -> Any:
        if self.ids is None:
            return row
        return json.loads(self.ids[int(np.searchsorted(self.rows, row))].as_py())
