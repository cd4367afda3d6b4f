"""Read CoNLL-style token files (CoNLL-2003 and the like) into one row per sentence.

The format: one ``token ... tag`` line per word, columns separated by spaces or tabs, the token in the
first column and the tag in the last; a blank line ends a sentence; ``-DOCSTART-`` lines (document
boundaries) are skipped. Every token line of a file has the same number of columns.
"""

from __future__ import annotations

import re

import pandas as pd

from bertcls.data.utf8 import invalid_utf8_error
from bertcls.errors import DataError

LINE_COLUMN = "line"  # 1-based line number of a sentence's first token
# A frame's ``attrs`` entries from a reader that skips bad lines: their line numbers, and the positions the rows
# (CSV lines, CoNLL sentences) they belonged to would have had, so that later rows keep their numbers.
SKIPPED_LINES = "skipped_lines"
SKIPPED_ROWS = "skipped_rows"
SKIP_SENTENCE_HINT = "Or set data.skip_invalid: true to drop the sentences of such lines (counted in the log)."
DOCUMENT_START = "-DOCSTART-"
FORMAT_HINT = (
    "CoNLL files have one 'token ... tag' line per word (columns separated by spaces or tabs, the token first "
    "and the tag last) and a blank line between sentences."
)
_SEPARATOR = re.compile(r"[ \t]+")


def read_conll(resolved: str, path: str, skip_bad_lines: bool = False) -> pd.DataFrame:
    """One row per sentence of the CoNLL file at ``resolved``: ``tokens``, ``tags`` and ``line``.

    ``path`` is the name given by the user, used in error messages. A token line whose column count differs from
    the file's first raises a ``DataError``; with ``skip_bad_lines`` its sentence is dropped instead, and the line's
    number kept in the frame's ``attrs[SKIPPED_LINES]`` (and the sentence's position in ``attrs[SKIPPED_ROWS]``).
    """
    sentences: list[tuple[list[str], list[str], int]] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    width = 0  # the column count of the file's first token line
    width_line = 0
    skipped: list[int] = []
    skipped_sentences: list[int] = []
    broken = False  # the sentence holds a skipped line
    for number, line in enumerate(_lines(resolved, path), start=1):
        columns = _SEPARATOR.split(line.strip(" \t\r\n"))
        if columns[0] in ("", DOCUMENT_START):  # a blank line or a document boundary ends the sentence
            if tokens:
                _end_sentence(sentences, skipped_sentences, (tokens, tags, first_line), broken)
            tokens, tags, broken = [], [], False
            continue
        if len(columns) != width:
            if width == 0:
                width, width_line = len(columns), number
            problem = _width_problem(columns, width, width_line, number, path)
            if problem and not skip_bad_lines:
                raise DataError(problem)
            if problem:
                skipped.append(number)
                broken = True
        if not tokens:
            first_line = number
        tokens.append(columns[0])
        tags.append(columns[-1])
    if tokens:
        _end_sentence(sentences, skipped_sentences, (tokens, tags, first_line), broken)
    if not sentences:
        raise DataError(f"{path}: no sentences found. {FORMAT_HINT}")
    frame = pd.DataFrame(sentences, columns=["tokens", "tags", LINE_COLUMN])
    frame.attrs[SKIPPED_LINES] = skipped
    frame.attrs[SKIPPED_ROWS] = skipped_sentences
    return frame


def _end_sentence(
    sentences: list[tuple[list[str], list[str], int]],
    skipped: list[int],
    sentence: tuple[list[str], list[str], int],
    broken: bool,
) -> None:
    """Keep a finished sentence, or note the position of a broken one."""
    if broken:
        skipped.append(len(sentences) + len(skipped))
    else:
        sentences.append(sentence)


def _lines(resolved: str, path: str) -> list[str]:
    """The file's lines, decoded as UTF-8 (a byte-order mark is dropped)."""
    with open(resolved, "rb") as handle:
        content = handle.read()
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise invalid_utf8_error(path, content, error, example=path) from error
    return text.split("\n")


def _width_problem(columns: list[str], width: int, width_line: int, number: int, path: str) -> str | None:
    """What is wrong with a token line of ``len(columns)`` columns where the file's first has ``width``, if anything."""
    if len(columns) == 1:
        return (
            f"{path}: line {number} has a single column ('{columns[0]}'): the token or its tag is missing. "
            f"{FORMAT_HINT} {SKIP_SENTENCE_HINT}"
        )
    if len(columns) != width:
        return (
            f"{path}: line {number} has {len(columns)} columns but line {width_line} has {width}. Every token line "
            "needs the same columns: fix that line (a token or tag containing a space, or a missing column). "
            + SKIP_SENTENCE_HINT
        )
    return None
