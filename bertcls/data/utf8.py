"""Find the first byte that is not UTF-8 in a file or in bytes, and say where it is and how to convert the input."""

from __future__ import annotations

import codecs
from pathlib import Path

from bertcls.errors import DataError

BLOCK_SIZE = 1 << 20


def invalid_utf8_error(where: str, content: bytes, error: UnicodeDecodeError, example: str | None = None) -> DataError:
    """A ``DataError`` for ``error``, raised while decoding all of ``content`` (so ``error.start`` is its offset)."""
    line = content.count(b"\n", 0, error.start) + 1
    return _error(where, line, error.start, content[error.start], example)


def check_utf8_file(resolved: str | Path, where: str) -> None:
    """Raise a ``DataError`` naming the line and byte offset of the first byte of ``resolved`` that is not UTF-8.

    The file is read in blocks, so a large file is never held in memory. Returns quietly when it is valid.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 0
    with open(resolved, "rb") as handle:
        while True:
            block = handle.read(BLOCK_SIZE)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as error:
                # The decoder keeps up to 3 bytes of an unfinished character from the previous block.
                pending = len(error.object) - len(block)
                position = error.start - pending
                bad = error.object[error.start]
                line = lines + block.count(b"\n", 0, max(position, 0)) + 1
                raise _error(where, line, offset + position, bad, where) from error
            if not block:
                return
            offset += len(block)
            lines += block.count(b"\n")


def _error(where: str, line: int, offset: int, byte: int, example: str | None) -> DataError:
    """``example``: the file, for the conversion command; None for standard input."""
    source = example or "texts.txt"
    fix = "Re-save the file as UTF-8" if example else "Convert the input to UTF-8"
    converted = f"converted{Path(source).suffix or '.txt'}"
    return DataError(
        f"{where}: not valid UTF-8: line {line} (byte offset {offset}) holds the byte {byte:#04x}. {fix}, e.g. "
        f"`iconv -f cp1252 -t utf-8 {source} > {converted}` (with the actual encoding in place of cp1252; "
        f"`file -i {source}` guesses it), and use the converted file."
    )
