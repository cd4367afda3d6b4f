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

from bertcls.data.collate import TokenizedDataset
from bertcls.data.labels import row_list
from bertcls.data.sources import ROW_COLUMN
from bertcls.errors import DataError

ID_COLUMN = "source_id"
MAX_DUPLICATES_SHOWN = 3


def encoded_ids(frame: pd.DataFrame, column: str, where: str) -> dict[int, str]:
    """Row -> JSON-encoded id from ``frame[column]``; missing or repeated ids raise a ``DataError`` naming the rows."""
    values = frame[column]
    missing = values.isna()
    if missing.any():
        raise DataError(
            f"{where}: data.id_column '{column}' is empty at {row_list(frame.loc[missing, ROW_COLUMN])} (rows counted "
            "from 1, header excluded). Give every row an id, or leave data.id_column unset to use row numbers."
        )
    repeated = values.duplicated(keep=False)
    if repeated.any():
        groups = frame[repeated].groupby(column, sort=False)[ROW_COLUMN]
        shown = [f"{value!r} at {row_list(rows)}" for value, rows in list(groups)[:MAX_DUPLICATES_SHOWN]]
        more = f" and {groups.ngroups - MAX_DUPLICATES_SHOWN} more" if groups.ngroups > MAX_DUPLICATES_SHOWN else ""
        raise DataError(
            f"{where}: data.id_column '{column}' repeats ids: {'; '.join(shown)}{more} (rows counted from 1, header "
            "excluded). The ids name the output rows, so they must be unique: fix those rows, or leave "
            "data.id_column unset to use row numbers."
        )
    encoded = [json.dumps(value, ensure_ascii=False, default=str) for value in values.tolist()]
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
