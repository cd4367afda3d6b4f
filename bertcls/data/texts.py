"""A text from one column, or joined from several (``data.text_column: [title, description]``).

A text given as a list of columns is built per row from the parts that hold text, in the listed order, with
``data.text_separator`` between them: an empty (missing or whitespace-only) part is left out with its separator,
and a row whose every part is empty has no text, which the row checks report as an empty text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

# A space: WordPiece tokenizers treat it as a word boundary and add nothing, so a joined text reads as one passage,
# like the "title. description" texts models are usually trained on; " [SEP] " (a BERT tokenizer turns it into
# its separator token) or " . " mark the boundary more strongly, at one or two tokens per row.
DEFAULT_TEXT_SEPARATOR = " "
TextColumn = str | tuple[str, ...]  # one column, or the columns joined into one text


def as_text_column(column: str | Sequence[str] | None) -> TextColumn | None:
    """A configured text column as the data spec keeps it: a name (also for a list of one, ``[title]`` is
    ``title``: same texts, same cache key), a tuple of names, or None (empty or unset)."""
    if not column:
        return None
    if isinstance(column, str):
        return column
    return column[0] if len(column) == 1 else tuple(column)


def text_parts(column: TextColumn | None) -> list[str]:
    """The source columns a text is read from."""
    if not column:
        return []
    return [column] if isinstance(column, str) else list(column)


def text_name(column: TextColumn) -> str:
    """The text's name in frames and messages: the column's, or ``title + description`` for joined columns."""
    return column if isinstance(column, str) else " + ".join(column)


def joined(parts: Sequence[Any], separator: str) -> str | None:
    """The parts that hold text (missing and whitespace-only ones left out) joined by ``separator``; None if none."""
    kept = [str(part) for part in parts if not (pd.api.types.is_scalar(part) and pd.isna(part)) and str(part).strip()]
    return separator.join(kept) if kept else None


def with_texts(frame: pd.DataFrame, columns: Sequence[TextColumn], separator: str) -> pd.DataFrame:
    """``frame`` with each joined text of ``columns`` in a column named by ``text_name`` (one column stays as it is)."""
    lists = [column for column in columns if not isinstance(column, str)]
    if not lists:
        return frame
    texts = {
        text_name(column): [joined(parts, separator) for parts in frame[list(column)].itertuples(index=False)]
        for column in lists
    }
    return frame.assign(**texts)
