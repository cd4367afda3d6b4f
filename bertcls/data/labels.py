"""The label vocabulary: label names in a fixed order, built from the training split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bertcls.data.sources import ROW_COLUMN
from bertcls.errors import DataError

MAX_ROWS_SHOWN = 5


def _rows(frame: pd.DataFrame, mask: pd.Series) -> str:
    """Format the 1-based data-row numbers (header excluded) of the masked rows."""
    return row_list(frame.loc[mask, ROW_COLUMN])


def row_list(rows: pd.Series) -> str:
    """Format 0-based source rows as "row 3, 8 and 2 more" (1-based)."""
    rows = sorted(set((rows + 1).tolist()))
    shown = ", ".join(str(row) for row in rows[:MAX_ROWS_SHOWN])
    return f"row {shown}" + (f" and {len(rows) - MAX_ROWS_SHOWN} more" if len(rows) > MAX_ROWS_SHOWN else "")


def label_strings(frame: pd.DataFrame, column: str, where: str) -> pd.Series:
    """Return the label column as strings; integral floats (1.0) become integers ("1").

    Raises a ``DataError`` naming the rows whose label is missing.
    """
    values = frame[column]
    missing = values.isna()
    if missing.any():
        raise DataError(
            f"{where}: missing label in column '{column}' at {_rows(frame, missing)} "
            "(rows counted from 1, header excluded). Fill in the labels or remove those rows."
        )
    if pd.api.types.is_float_dtype(values) and (values == values.round()).all():
        values = values.astype("int64")
    return values.astype(str)


@dataclass(frozen=True)
class LabelVocabulary:
    """Label names; a label's id is its position. Numeric labels sort numerically, others as text."""

    names: tuple[str, ...]

    @classmethod
    def from_labels(cls, labels: pd.Series) -> LabelVocabulary:
        unique = labels.unique().tolist()
        numeric = all(name.lstrip("-").isdigit() for name in unique)
        return cls(tuple(sorted(unique, key=int if numeric else str)))

    @classmethod
    def from_names(cls, names: Sequence[str]) -> LabelVocabulary:
        if len(set(names)) != len(names):
            raise DataError(f"label_names has duplicates: {list(names)}. Give each label once.")
        return cls(tuple(str(name) for name in names))

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, frame: pd.DataFrame, column: str, where: str, as_indices: bool = False) -> np.ndarray:
        """Map the label column of ``frame`` to ids; unknown labels raise a ``DataError`` naming the rows."""
        labels = label_strings(frame, column, where)
        return self.lookup(labels, frame[ROW_COLUMN], f"{where}: column '{column}'", as_indices)

    def lookup(self, labels: pd.Series, rows: pd.Series, where: str, as_indices: bool = False) -> np.ndarray:
        """Ids of ``labels`` (strings); ``rows`` holds each one's 0-based source row, for error messages.

        With ``as_indices`` the labels are 0-based positions in ``names`` ("3" is the fourth name).
        """
        labels = labels.reset_index(drop=True)
        rows = rows.reset_index(drop=True)
        if as_indices:
            ids = pd.to_numeric(labels, errors="coerce")
            ids = ids.where((ids >= 0) & (ids < len(self.names)) & (ids == ids.round()))
            expected = f"whole numbers from 0 to {len(self.names) - 1} (positions in the {len(self.names)} label names)"
        else:
            ids = labels.map({name: index for index, name in enumerate(self.names)})
            expected = f"one of the training data's labels {list(self.names)}"
        unknown = ids.isna()
        if unknown.any():
            values = sorted(labels[unknown].unique().tolist())[:MAX_ROWS_SHOWN]
            shown = row_list(rows[unknown])
            raise DataError(
                f"{where}: label(s) {values} at {shown} (rows counted from 1, header excluded) are not {expected}. "
                "Fix those rows, or give the complete label set with model.label_names."
            )
        return ids.to_numpy(dtype=np.int64)
