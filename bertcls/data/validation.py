"""Row checks that run on a split before it is tokenized: every problem found at once, then an error or a skip.

A task lists the rows it cannot use (``Task.invalid_rows``): each ``InvalidRows`` is one problem (an empty text,
a missing or unknown label, a broken tag sequence, ...) with a mask over the split's rows and the fix. By default
any of them stops the run before the model loads, with one message naming the file, each problem's rows and its
fix; with ``data.skip_invalid`` those rows are dropped instead and counted in the log.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bertcls.data.conll import LINE_COLUMN
from bertcls.data.labels import MAX_ROWS_SHOWN, LabelVocabulary, label_key, row_list, usual_spellings
from bertcls.data.sources import ROW_COLUMN
from bertcls.errors import DataError

ROWS_NOTE = "rows counted from 1, header excluded"
# Unicode categories of characters that show nothing: controls (NUL included), format characters (zero-width
# space and joiners, byte-order marks) and separators. A text made only of them reaches the model as an empty input.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
JSON_TYPES = {"list": "a list", "ndarray": "a list", "dict": "an object", "bool": "true/false", "bool_": "true/false"}
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
    fix = (
        f"a label must be {vocabulary.expected(as_indices)}; fix those rows, or give the complete label set with "
        "model.label_names"
    )
    keys = {label_key(name) for name in vocabulary.names}
    if near := [label for label in shown if not as_indices and label_key(label) in keys]:
        fix += f"; {near} differ from a label name only in case or surrounding spaces: data.normalize_labels: true "
        fix += "reads each as that name"
    return InvalidRows(f"unknown label(s) {shown} in column '{column}'", rows_with(unknown, positions, num_rows), fix)


def spelling_note(labels: pd.Series, where: str, column: str) -> str | None:
    """The warning for labels (strings) spelt otherwise than a more frequent one equal to it but for case or
    surrounding whitespace ("Pos" and "neg " among "pos" and "neg"), which become classes of their own; None if none.

    A warning, not an invalid row: such spellings may be meant (``model.label_names`` keeps them apart), and
    ``data.skip_invalid`` would drop their rows; the fix is one option (``data.normalize_labels``).
    """
    usual = usual_spellings(labels)
    variants = sorted(label for label, spelling in usual.items() if spelling != label)
    if not variants:
        return None
    rows = int(labels.isin(variants).sum())
    pairs = ", ".join(f"{label!r} beside {usual[label]!r}" for label in variants[:MAX_ROWS_SHOWN])
    more = f" and {len(variants) - MAX_ROWS_SHOWN} more" if len(variants) > MAX_ROWS_SHOWN else ""
    return (
        f"{where}: warning: labels in column '{column}' that differ from a more frequent one only in case or "
        f"surrounding spaces ({pairs}{more}; {rows} of {len(labels)}) are trained as classes of their own. Set "
        "data.normalize_labels: true to read each label in its most frequent spelling, or list every label in "
        "model.label_names to keep them apart (and silence this)."
    )


def blank(values: pd.Series) -> np.ndarray:
    """Cells that hold no text: missing, empty or only whitespace (a non-text cell counts as text here)."""
    empty = values.map(lambda value: isinstance(value, str) and not value.strip())
    return (values.isna() | empty).to_numpy(dtype=bool)


def invisible(value: Any) -> bool:
    """A text that is not blank but shows nothing: only control, zero-width, NUL or other invisible characters."""
    return (
        isinstance(value, str)
        and bool(value.strip())
        and all(char.isspace() or unicodedata.category(char) in INVISIBLE_CATEGORIES for char in value)
    )


def type_name(value: Any) -> str:
    """A non-text value's kind, as a JSON or Parquet user knows it: "a list", "a number", ..."""
    name = type(value).__name__
    return JSON_TYPES.get(name, "a number" if isinstance(value, int | float | np.number) else name)


def non_texts(values: pd.Series, column: str) -> InvalidRows:
    """The cells of a text column that hold something other than a string (numbers in Parquet, word lists in JSON
    Lines); missing cells are left to ``blank``."""
    missing = values.isna().to_numpy(dtype=bool)
    mask = values.map(lambda value: not isinstance(value, str)).to_numpy(dtype=bool) & ~missing
    kinds = sorted({type_name(value) for value in values[mask]})
    fix = 'give each text as a string (in JSON Lines: "text": "...")'
    if "a list" in kinds:
        fix += "; a list of words per row is the input of the token task (data.task: token, data.tokens_column)"
    return InvalidRows(f"a text that is not a string ({', '.join(kinds)}) in column '{column}'", mask, fix)


def blank_texts(frame: pd.DataFrame, columns: list[str]) -> list[InvalidRows]:
    """Per text column: missing, empty or whitespace-only cells; cells of only invisible characters (control,
    zero-width, NUL); and cells that are not strings, which would be tokenized as their Python repr."""
    invalid = []
    for column in columns:
        values = frame[column]
        invalid += [
            InvalidRows(f"empty text in column '{column}'", blank(values), "fill in the text or remove those rows"),
            InvalidRows(
                f"a text of only invisible characters (control, zero-width or NUL) in column '{column}'",
                values.map(invisible).to_numpy(dtype=bool),
                "fill in the text or remove those rows (the tokenizer drops such characters, leaving nothing)",
            ),
            non_texts(values, column),
        ]
    return invalid


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
