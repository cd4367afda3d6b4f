"""Find the first byte that is not UTF-8 in a file or in bytes, and say where it is and how to convert the input."""

from __future__ import annotations

import codecs
from pathlib import Path

from bertcls.errors import DataError

BLOCK_SIZE = 1 << 20
HEAD_SIZE = 4096  # the first bytes, enough to tell a compressed, zipped or UTF-16 file from text
# Byte-order marks, longest first (UTF-32 LE starts like UTF-16 LE), with iconv's name of each encoding.
BYTE_ORDER_MARKS = {
    b"\xff\xfe\x00\x00": "utf-32",
    b"\x00\x00\xfe\xff": "utf-32",
    b"\xff\xfe": "utf-16",
    b"\xfe\xff": "utf-16",
}


def invalid_utf8_error(where: str, content: bytes, error: UnicodeDecodeError, example: str | None = None) -> DataError:
    """A ``DataError`` for ``error``, raised while decoding all of ``content`` (so ``error.start`` is its offset)."""
    if binary := not_text_error(where, content[:HEAD_SIZE], example):
        return binary
    line = content.count(b"\n", 0, error.start) + 1
    return _error(where, line, error.start, content[error.start], example)


def check_text_file(resolved: str | Path, where: str) -> None:
    """Raise a ``DataError`` when ``resolved`` is gzip-compressed, a ZIP archive (an Excel workbook) or UTF-16/32.

    Checked before a text file is parsed: such files would otherwise fail as invalid UTF-8 with advice to convert
    from cp1252, or (UTF-16 without a byte-order mark) decode into names and texts with a NUL after every letter.
    """
    with open(resolved, "rb") as handle:
        head = handle.read(HEAD_SIZE)
    if error := not_text_error(where, head, where):
        raise error


def not_text_error(where: str, head: bytes, example: str | None) -> DataError | None:
    """What content starting with ``head`` is, and how to convert it, when it is one of the usual non-UTF-8 files;
    None otherwise. ``example``: the file, for the commands; None for standard input."""
    source = example or "texts.txt"
    if head.startswith(b"\x1f\x8b"):
        unpacked = source.removesuffix(".gz") if source.endswith(".gz") else f"unpacked{Path(source).suffix}"
        return DataError(
            f"{where}: is gzip-compressed (it starts with the bytes 1f 8b), not text. Decompress it, e.g. "
            f"`gunzip -c {source} > {unpacked}`, and use the decompressed file."
        )
    if head.startswith(b"PK\x03\x04"):
        return DataError(
            f"{where}: is a ZIP archive (it starts with the bytes 50 4b 03 04), such as an Excel workbook (.xlsx), not "
            "text. Save the sheet as CSV (in Excel: File > Save As > CSV UTF-8), or unzip the archive, and use that "
            "file."
        )
    if wide := wide_encoding(head):
        encoding, evidence = wide
        return DataError(
            f"{where}: is {encoding.upper()} text ({evidence}), not UTF-8. Convert it, e.g. `iconv -f {encoding} -t "
            f"utf-8 {source} > converted{Path(source).suffix or '.txt'}`, and use the converted file."
        )
    return None


def wide_encoding(head: bytes) -> tuple[str, str] | None:
    """UTF-16 or UTF-32 (iconv's name) and what shows it: a byte-order mark, or (UTF-16 without one, mostly ASCII
    text) a NUL byte before or after nearly every character; None for anything else."""
    for mark, encoding in BYTE_ORDER_MARKS.items():
        if head.startswith(mark):
            return encoding, f"it starts with the byte-order mark {mark.hex(' ')}"
    even, odd = head[0 : len(head) // 2 * 2 : 2], head[1 : len(head) // 2 * 2 : 2]
    if len(odd) < 4:
        return None
    for encoding, nuls, letters, place in (("utf-16le", odd, even, "after"), ("utf-16be", even, odd, "before")):
        if nuls.count(0) >= 0.8 * len(nuls) and letters.count(0) <= 0.1 * len(letters):
            return encoding, f"a NUL byte {place} nearly every character"
    return None


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
