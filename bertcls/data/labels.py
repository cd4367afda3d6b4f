"""The label vocabulary: label names in a fixed order, built from the training split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bertcls.data.sources import ROW_COLUMN
from bertcls.errors import DataError

MAX_ROWS_SHOWN = 5


def row_list(rows: pd.Series) -> str:
    """Format 0-based source rows as "row 3, 8 and 2 more" (1-based)."""
    rows = sorted(set((rows + 1).tolist()))
    shown = ", ".join(str(row) for row in rows[:MAX_ROWS_SHOWN])
    return f"row {shown}" + (f" and {len(rows) - MAX_ROWS_SHOWN} more" if len(rows) > MAX_ROWS_SHOWN else "")


def as_label_strings(values: pd.Series) -> pd.Series:
    """Labels as strings; integral floats (1.0, from a numeric column with gaps) become integers ("1")."""
    if pd.api.types.is_float_dtype(values) and (values == values.round()).all():
        values = values.astype("int64")
    return values.astype(str)


def is_whole_number(labels: pd.Series) -> pd.Series:
    """Which labels (strings) are whole numbers, such as "0" or "-1"."""
    return labels.str.fullmatch(r"-?\d+")


def odd_label_types(labels: pd.Series) -> np.ndarray:
    """Labels of the rarer kind where whole numbers and names are mixed ("1" among "pos"/"neg"), else none.

    Mixed kinds mostly mean a shifted column or a stray value; ties mark the numbers.
    """
    numeric = is_whole_number(labels).to_numpy(dtype=bool)
    if numeric.all() or not numeric.any():
        return np.zeros(len(labels), dtype=bool)
    return numeric if numeric.sum() <= (~numeric).sum() else ~numeric


@dataclass(frozen=True)
class LabelVocabulary:
    """Label names; a label's id is its position. Numeric labels sort numerically, others as text."""

    names: tuple[str, ...]

    @classmethod
    def from_labels(cls, labels: pd.Series) -> LabelVocabulary:
        unique = pd.Series(labels.unique())
        numeric = bool(is_whole_number(unique).all())
        return cls(tuple(sorted(unique.tolist(), key=int if numeric else str)))

    @classmethod
    def from_names(cls, names: Sequence[str]) -> LabelVocabulary:
        if len(set(names)) != len(names):
            repeated = sorted({name for name in names if list(names).count(name) > 1})
            raise DataError(
                f"The label names {list(names)} repeat {repeated} (from model.label_names, data.label_names_file or "
                "data.label_columns). Give each label once."
            )
        return cls(tuple(str(name) for name in names))

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, frame: pd.DataFrame, column: str, where: str, as_indices: bool = False) -> np.ndarray:
        """Map the label column of ``frame`` to ids; unknown labels raise a ``DataError`` naming the rows."""
        labels = as_label_strings(frame[column])
        return self.lookup(labels, frame[ROW_COLUMN], f"{where}: column '{column}'", as_indices)

    def lookup(self, labels: pd.Series, rows: pd.Series, where: str, as_indices: bool = False) -> np.ndarray:
        """Ids of ``labels`` (strings); ``rows`` holds each one's 0-based source row, for error messages.

        With ``as_indices`` the labels are 0-based positions in ``names`` ("3" is the fourth name). The data module's
        up-front checks (``Task.invalid_rows``) find unknown labels first; the error here guards direct callers.
        """
        labels = labels.reset_index(drop=True)
        rows = rows.reset_index(drop=True)
        ids = self.ids(labels, as_indices)
        unknown = ids.isna()
        if unknown.any():
            values = sorted(labels[unknown].unique().tolist())[:MAX_ROWS_SHOWN]
            shown = row_list(rows[unknown])
            raise DataError(
                f"{where}: label(s) {values} at {shown} (rows counted from 1, header excluded) are not "
                f"{self.expected(as_indices)}. Fix those rows, or give the complete label set with model.label_names."
            )
        return ids.to_numpy(dtype=np.int64)

    def ids(self, labels: pd.Series, as_indices: bool = False) -> pd.Series:
        """The id of each label (a string), NaN for a label that is not in the vocabulary."""
        if as_indices:
            ids = pd.to_numeric(labels, errors="coerce")
            return ids.where((ids >= 0) & (ids < len(self.names)) & (ids == ids.round()))
        return labels.map({name: index for index, name in enumerate(self.names)})

    def expected(self, as_indices: bool = False) -> str:
        """What a valid label is, for messages."""
        if as_indices:
            return f"whole numbers from 0 to {len(self.names) - 1} (positions in the {len(self.names)} label names)"
        return f"one of the training data's labels {list(self.names)}"
