"""The label vocabulary: label names in a fixed order, built from the training split."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bertcls.data.sources import ROW_COLUMN
from bertcls.errors import DataError

MAX_ROWS_SHOWN = 5
WHOLE_DECIMAL = re.compile(r"(-?\d+)\.0*")  # "1.0", "2.": whole numbers written as decimals


def row_list(rows: pd.Series) -> str:
    """Format 0-based source rows as "row 3, 8 and 2 more" (1-based)."""
    rows = sorted(set((rows + 1).tolist()))
    shown = ", ".join(str(row) for row in rows[:MAX_ROWS_SHOWN])
    return f"row {shown}" + (f" and {len(rows) - MAX_ROWS_SHOWN} more" if len(rows) > MAX_ROWS_SHOWN else "")


def label_text(value: Any) -> str:
    """One label as a string. A whole number written as a decimal (the float 1.0 of a numeric column with gaps, the
    string "1.0" in JSON) is the integer ("1"), so that labels equal as numbers are one label, not "names and
    numbers mixed"; other strings stay as they are ("01" too: it may be a code)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    text = str(value)
    whole = WHOLE_DECIMAL.fullmatch(text)
    return str(int(whole[1])) if whole else text


def as_label_strings(values: pd.Series) -> pd.Series:
    """Labels as strings (``label_text``)."""
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values.astype(str)
    return values.map(label_text)


def label_key(label: str) -> str:
    """What the spellings of one label share: the label without surrounding whitespace, case-folded."""
    return label.strip().casefold()


def usual_spellings(labels: pd.Series) -> dict[str, str]:
    """Each distinct label (a string) -> the spelling used most often among the labels equal to it but for case and
    surrounding whitespace (ties: the first in sorted order); a label spelt one way maps to itself."""
    counts = labels.value_counts()
    usual: dict[str, str] = {}
    for label, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        usual.setdefault(label_key(label), label)
    return {label: usual[label_key(label)] for label in counts.index}


def normalized_labels(labels: pd.Series, names: Sequence[str] | None) -> pd.Series:
    """``data.normalize_labels``: each label (a string) as the label name equal to it but for case and surrounding
    whitespace; without names (the training split builds them), as its usual spelling (``usual_spellings``), stripped.
    A label matching no name, or several, stays as it is (the row checks report it)."""
    if names is None:
        return labels.map({label: usual.strip() for label, usual in usual_spellings(labels).items()})
    keys = [label_key(name) for name in names]
    named = {key: name for key, name in zip(keys, names, strict=True) if keys.count(key) == 1}
    return labels.map(lambda label: named.get(label_key(label), label))


def renamed_note(before: pd.Series, after: pd.Series, where: str) -> str | None:
    """The log line on labels that ``normalized_labels`` read in another spelling (None when it changed none)."""
    changed = (before.to_numpy() != after.to_numpy()).astype(bool)
    if not changed.any():
        return None
    pairs = sorted(set(zip(before[changed], after[changed], strict=True)))[:MAX_ROWS_SHOWN]
    shown = ", ".join(f"{old!r} as {new!r}" for old, new in pairs)
    count = int(changed.sum())
    return (
        f"{where}: read {count} label{'s' if count != 1 else ''} in another spelling (data.normalize_labels): {shown}."
    )


def is_whole_number(labels: pd.Series) -> pd.Series:
    """Which labels (strings) are whole numbers, such as "0" or "-1"."""
    return labels.str.fullmatch(r"-?\d+")


def label_kind(labels: pd.Series) -> str:
    """What labels (strings) are, for messages: "whole numbers", "numbers with a fraction" (such as "0.5"), "numbers"
    (both) or "names"."""
    numbers = pd.to_numeric(labels, errors="coerce")
    if numbers.isna().any():
        return "names"
    whole = is_whole_number(labels)
    return "whole numbers" if whole.all() else "numbers with a fraction" if not whole.any() else "numbers"


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
        index = {name: position for position, name in enumerate(self.names)}
        for position, name in enumerate(self.names):  # names saved before "1.0" was read as "1" still match
            index.setdefault(label_text(name), position)
        return labels.map(index)

    def expected(self, as_indices: bool = False) -> str:
        """What a valid label is, for messages."""
        if as_indices:
            return f"whole numbers from 0 to {len(self.names) - 1} (positions in the {len(self.names)} label names)"
        return f"one of the training data's labels {list(self.names)}"
