"""Reading the token task's inputs: word and tag lists from a split's rows, words from raw text, tags as ids."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from transformers import PreTrainedTokenizerBase

from bertcls.data.conll import LINE_COLUMN
from bertcls.data.labels import LabelVocabulary
from bertcls.data.sources import ROW_COLUMN
from bertcls.errors import DataError
from bertcls.tasks.base import DataSpec

LIST_FIX = "give one list per row (JSON Lines or Parquet), or use a CoNLL file"


def _row_name(frame: pd.DataFrame, index: int) -> str:
    """ "row 12" (1-based, header excluded), with the CoNLL line of its first token when known."""
    name = f"row {int(frame[ROW_COLUMN].iloc[index]) + 1}"
    if LINE_COLUMN in frame.columns:
        name += f" (line {int(frame[LINE_COLUMN].iloc[index])})"
    return name


def as_string_list(value: object) -> list[str] | None:
    """A cell's list (or array, from Parquet) as a list of strings; None when it is not a list without gaps."""
    items = value.tolist() if isinstance(value, np.ndarray) else value
    if not isinstance(items, list | tuple) or None in items:
        return None
    return list(map(str, items))


def string_lists(frame: pd.DataFrame, column: str, where: str) -> list[list[str]]:
    """The column's lists as lists of strings (``as_string_list``); anything else raises a ``DataError``."""
    lists: list[list[str]] = []
    for index, value in enumerate(frame[column].tolist()):
        items = as_string_list(value)
        if items is None:
            raise DataError(
                f"{where}: column '{column}' at {_row_name(frame, index)} holds {str(value)[:60]!r}, not a list "
                f"of strings: {LIST_FIX}."
            )
        lists.append(items)
    return lists


def read_sentences(frame: pd.DataFrame, spec: DataSpec, where: str) -> tuple[list[list[str]], list[list[str]]]:
    """Each row's words and tags; rows whose two lists differ in length raise a ``DataError``."""
    words = string_lists(frame, spec.tokens_column, where)
    tags = string_lists(frame, spec.tags_column, where)
    for index, (row_words, row_tags) in enumerate(zip(words, tags, strict=True)):
        if len(row_words) != len(row_tags):
            raise DataError(
                f"{where}: {_row_name(frame, index)} has {len(row_words)} tokens ('{spec.tokens_column}') but "
                f"{len(row_tags)} tags ('{spec.tags_column}'). Give exactly one tag per token."
            )
    return words, tags


def split_text(text: str, tokenizer: PreTrainedTokenizerBase) -> tuple[list[str], list[list[int]]]:
    """Words of a raw text as the tokenizer's pre-tokenizer splits them, with their character offsets."""
    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    if pre_tokenizer is None:
        spans = [(match.start(), match.end()) for match in re.finditer(r"\S+", text)]
    else:
        spans = [offsets for _, offsets in pre_tokenizer.pre_tokenize_str(text)]
    return [text[start:end] for start, end in spans], [[start, end] for start, end in spans]


def tags_to_ids(tags: list[list[str]], frame: pd.DataFrame, vocabulary: LabelVocabulary, where: str) -> list[list[int]]:
    """The tags as ids, one list per sentence; a tag the vocabulary lacks raises a ``DataError`` naming the row."""
    lengths = [len(sentence) for sentence in tags]
    flat = pd.Series([tag for sentence in tags for tag in sentence], dtype=object)
    rows = frame[ROW_COLUMN].repeat(lengths)
    ids = vocabulary.lookup(flat, rows, where)
    return [part.tolist() for part in np.split(ids, np.cumsum(lengths)[:-1])] if lengths else []
