"""Checks of a training split as a whole, before training: its labels (one class only: refused; labels that look
like free text, or almost all seen once: a warning) and its overlap with the validation split (a warning).

Row checks (``bertcls.data.validation``) find rows a run cannot use; these find a split that reads fine row by row
but cannot train, or cannot measure, what the user expects.
"""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd

from bertcls.errors import DataError

FEW_DISTINCT = 10  # below this many labels, singletons are not "almost every label"
SINGLETON_SHARE = 0.8  # of the labels seen once, for the warning
FREE_TEXT_WORDS = 4  # a label of this many words or more reads like a sentence
FREE_TEXT_SHARE = 0.5  # of the labels that read like sentences, for the warning
OVERLAP_SHARE = 0.1  # of the validation examples also in the training split, for the warning
SHOWN = 60  # characters of a label quoted in a message


def check_label_variety(counts: pd.Series, where: str, column: str, task: str) -> None:
    """Refuse a training split in which fewer than two labels occur (``counts``: label -> rows or words with it).

    A classifier cannot learn anything from one class, and its metrics are undefined (torchmetrics would stop the
    run after the model has loaded)."""
    if len(counts) >= 2:
        return
    found = f"only one label, {shown(counts.index[0])}, occurs" if len(counts) else "no label occurs"
    hint = (
        " For one label that a text has or has not, use data.task single_label with two labels (e.g. yes and no)."
        if task == "multi_label"
        else ""
    )
    raise DataError(
        f"{where}: {found} in the training data (column '{column}'): a classifier needs examples of at least two "
        "labels to learn to tell them apart. Add rows of the other label(s); check data.label_column, and data.where "
        f"(a filter may have kept the rows of one label only).{hint}"
    )


def label_spread_notes(counts: pd.Series, where: str, column: str, text_column: str) -> list[str]:
    """Warnings on a training split's labels (``counts``: label -> rows with it): labels that look like free text
    (data.label_column pointing at a text column), or labels that almost all occur once (an id column)."""
    labels = [str(label) for label in counts.index]
    if not labels:
        return []
    wordy = [label for label in labels if len(label.split()) >= FREE_TEXT_WORDS]
    if len(labels) >= 2 and len(wordy) >= FREE_TEXT_SHARE * len(labels):
        return [
            f"{where}: warning: the labels in column '{column}' look like free text ({len(wordy)} of {len(labels)} "
            f"have {FREE_TEXT_WORDS} or more words, e.g. {shown(wordy[0])}). Is data.label_column a text column? "
            f"The texts come from data.text_column ({text_column!r}); the label column holds a class name or number."
        ]
    singletons = int((counts == 1).sum())
    if len(labels) >= FEW_DISTINCT and singletons >= SINGLETON_SHARE * len(labels):
        return [
            f"{where}: warning: {singletons} of the {len(labels)} labels in column '{column}' occur in one row only: "
            "a classifier cannot learn a label from a single example, nor be validated on it. Check data.label_column "
            "(an id or text column?), or merge the rare labels into broader ones."
        ]
    return []


def text_hashes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One 64-bit hash per row of ``frame``'s text ``columns`` (equal texts, equal hashes)."""
    return pd.util.hash_pandas_object(frame[columns].astype(str), index=False).to_numpy()


def encoded_hashes(table: datasets.Dataset) -> np.ndarray:
    """One 64-bit hash per example of an encoded split's ``input_ids`` (equal word pieces, equal hashes)."""
    ids = table.data.column("input_ids").combine_chunks()
    offsets = ids.offsets.to_numpy().astype(np.int64)
    values = ids.flatten().to_numpy().astype(np.uint64)
    lengths = np.diff(offsets)
    if not len(lengths) or not len(values):
        return lengths.astype(np.uint64)
    position = np.arange(len(values), dtype=np.uint64) - np.repeat(offsets[:-1], lengths).astype(np.uint64)
    with np.errstate(over="ignore"):  # wrapping arithmetic is the point: a polynomial hash modulo 2**64
        mixed = (values + np.uint64(1)) * (position * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0xBF58476D1CE4E5B9))
        sums = np.add.reduceat(mixed, offsets[:-1].clip(max=len(values) - 1))
    return np.where(lengths > 0, sums, 0).astype(np.uint64) ^ lengths.astype(np.uint64)


def overlap_note(train: np.ndarray, validation: np.ndarray, train_where: str, validation_where: str) -> str | None:
    """A warning when the validation split is the training split, or shares many of its examples (row hashes
    ``train`` and ``validation``): validation scores then measure memorisation, not generalisation."""
    if not len(validation):
        return None
    shared = int(np.isin(validation, train).sum())
    if shared < OVERLAP_SHARE * len(validation):
        return None
    same = "is the same as" if shared == len(validation) else "overlaps heavily with"
    return (
        f"{validation_where}: warning: the validation data {same} the training data ({train_where}): {shared} of its "
        f"{len(validation)} examples ({shared / len(validation):.0%}) also occur there, so validation scores (and the "
        "best checkpoint) measure memorisation. Give a validation file without the training rows, or leave "
        "data.validation_file out to hold out data.validation_fraction of the training rows."
    )


def shown(label: object) -> str:
    text = str(label)
    return repr(text if len(text) <= SHOWN else text[: SHOWN - 3] + "...")
