"""Row checks that run on a split before it is tokenized: every problem found at once, then an error or a skip.

A task lists the rows it cannot use (``Task.invalid_rows``): each ``InvalidRows`` is one problem (an empty text,
a missing or unknown label, a broken tag sequence, ...) with a mask over the split's rows and the fix. By default
any of them stops the run before the model loads, with one message naming the file, each problem's rows and its
fix; with ``data.skip_invalid`` those rows are dropped instead and counted in the log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bertcls.data.conll import LINE_COLUMN
from bertcls.data.labels import MAX_ROWS_SHOWN, LabelVocabulary, row_list
from bertcls.data.sources import ROW_COLUMN
from bertcls.errors import DataError

ROWS_NOTE = "rows counted from 1, header excluded"
SKIP_HINT = "Or set data.skip_invalid: true to drop such rows (they are counted in the log)."


@dataclass(frozen=True)
class InvalidRows:
    """The rows of a split that share one problem: ``problem`` says what is wrong, ``fix`` how to mend it."""

    problem: str
    mask: np.ndarray  # bool, one entry per row of the frame that was checked
    fix: str

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    def describe(self, frame: pd.DataFrame) -> str:
        """ "<problem> at row 3, 8", with the lines of CoNLL sentences: "at row 2 (line 7)"."""
        rows = row_list(frame.loc[self.mask, ROW_COLUMN])
        if LINE_COLUMN in frame.columns:
            lines = frame.loc[self.mask, LINE_COLUMN].head(MAX_ROWS_SHOWN).tolist()
            rows += f" ({'line' if len(lines) == 1 else 'lines'} {', '.join(map(str, lines))})"
        return f"{self.problem} at {rows}"


def rows_with(mask: np.ndarray, positions: np.ndarray, num_rows: int) -> np.ndarray:
    """A mask over ``num_rows`` rows from a mask over items, ``positions`` holding each item's row."""
    rows = np.zeros(num_rows, dtype=bool)
    rows[positions[mask]] = True
    return rows


def unknown_labels(
    labels: pd.Series, positions: np.ndarray, num_rows: int, vocabulary: LabelVocabulary, as_indices: bool, column: str
) -> InvalidRows:
    """The rows holding a label (string) that ``vocabulary`` lacks; ``positions`` holds each label's row."""
    unknown = vocabulary.ids(labels.reset_index(drop=True), as_indices).isna().to_numpy()
    shown = sorted(labels[unknown].unique().tolist())[:MAX_ROWS_SHOWN]
    return InvalidRows(
        f"unknown label(s) {shown} in column '{column}'",
        rows_with(unknown, positions, num_rows),
        f"a label must be {vocabulary.expected(as_indices)}; fix those rows, or give the complete label set with "
        "model.label_names",
    )


def blank(values: pd.Series) -> np.ndarray:
    """Cells that hold no text: missing, empty or only whitespace (a non-text cell counts as text here)."""
    empty = values.map(lambda value: isinstance(value, str) and not value.strip())
    return (values.isna() | empty).to_numpy(dtype=bool)


def blank_texts(frame: pd.DataFrame, columns: list[str]) -> list[InvalidRows]:
    """One ``InvalidRows`` per text column with missing, empty or whitespace-only cells."""
    return [
        InvalidRows(f"empty text in column '{column}'", blank(frame[column]), "fill in the text or remove those rows")
        for column in columns
    ]


def found(invalid: list[InvalidRows]) -> list[InvalidRows]:
    """The problems that do occur."""
    return [entry for entry in invalid if entry.mask.any()]


def invalid_message(frame: pd.DataFrame, invalid: list[InvalidRows], where: str) -> str:
    """The error for a split with invalid rows: the file, then each problem's rows and fix."""
    if len(invalid) == 1:
        entry = invalid[0]
        return f"{where}: {entry.describe(frame)} ({ROWS_NOTE}). Fix: {entry.fix}. {SKIP_HINT}"
    lines = [f"- {entry.describe(frame)}: {entry.fix}." for entry in invalid]
    return f"{where}: {len(invalid)} kinds of invalid rows ({ROWS_NOTE}):\n" + "\n".join(lines) + f"\n{SKIP_HINT}"


def kinds(frame: pd.DataFrame, invalid: list[InvalidRows]) -> str:
    """ "2 with empty text in column 'text' at row 3, 8; 1 with ..." (a row may have several problems)."""
    return "; ".join(f"{entry.count} with {entry.describe(frame)}" for entry in invalid)


@dataclass(frozen=True)
class CheckedRows:
    """A split's rows as read and selected, the notes on rows already dropped, the problems found in the rest
    (``invalid``, not yet dropped) and the file lines the reader skipped (``data.skip_invalid``)."""

    frame: pd.DataFrame
    notes: list[str]
    invalid: list[InvalidRows]
    skipped_lines: list[int]

    @property
    def invalid_mask(self) -> np.ndarray:
        """The rows with at least one problem."""
        return np.logical_or.reduce([np.zeros(len(self.frame), dtype=bool)] + [entry.mask for entry in self.invalid])

    def skipped_lines_note(self, where: str) -> list[str]:
        """The log line for the skipped file lines (none when there are none)."""
        lines = self.skipped_lines
        if not lines:
            return []
        more = f" and {len(lines) - MAX_ROWS_SHOWN} more" if len(lines) > MAX_ROWS_SHOWN else ""
        shown = ", ".join(map(str, lines[:MAX_ROWS_SHOWN])) + more
        problem = f"{len(lines)} lines with the wrong number of fields (in CoNLL files: their sentences)"
        return [f"{where}: skipped {problem} (data.skip_invalid): line {shown}."]


def drop_or_raise(rows: CheckedRows, where: str, skip: bool) -> tuple[pd.DataFrame, int, str | None]:
    """Without ``skip``, raise a ``DataError`` listing every problem; with it, drop the rows and say so.

    Returns the kept rows, how many were dropped and the note for the log (None when every row is valid).
    """
    frame, invalid = rows.frame, found(rows.invalid)
    if not invalid:
        return frame, 0, None
    if not skip:
        raise DataError(invalid_message(frame, invalid, where))
    bad = rows.invalid_mask
    if bad.all():
        raise DataError(
            f"{where}: all {len(frame)} rows are invalid ({kinds(frame, invalid)}). Check the column settings "
            "(data.text_column, data.label_column, ...) and the file."
        )
    dropped = int(bad.sum())
    note = f"{where}: skipped {dropped} of {len(frame)} rows as invalid (data.skip_invalid): {kinds(frame, invalid)}."
    return frame[~bad].reset_index(drop=True), dropped, note
