"""``--data.predict_file -``: texts from standard input, one per line (a tab between the two texts of a pair, and
between the fields of a text joined from several columns).

Standard input can be read only once, but under DDP Lightning starts the other ranks as new processes running
the same command. So the launching process reads it (when the data module is built, before any other rank
exists), checks it, writes the texts to a JSON Lines file and names that file in an environment variable;
the ranks it starts inherit the variable and read the same file. The file is removed when the launching
process exits.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import tempfile
from pathlib import Path

from bertcls.data.utf8 import invalid_utf8_error
from bertcls.errors import DataError, InputError

STDIN = "-"
STDIN_NAME = "standard input"
SPOOL_VARIABLE = "BERTCLS_STDIN_SPOOL"  # "<pid of the process that read stdin>:<path of its JSON Lines copy>"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID")


def stdin_texts_file(columns: list[str], joined: bool = False) -> str:
    """The path of a JSON Lines file holding standard input's texts under ``columns``: one or two names, or with
    ``joined`` the source columns of texts joined from several (see ``parse_lines``)."""
    spooled = os.environ.get(SPOOL_VARIABLE, "")
    reader, _, path = spooled.partition(":")
    if reader in (str(os.getpid()), str(os.getppid())) and Path(path).is_file():
        return path  # read already: by this process, or by the one that started this rank
    if any(os.environ.get(name, "0") not in ("", "0") for name in RANK_VARIABLES):
        raise InputError(
            "--data.predict_file - (standard input) reaches only the first process of a job started by srun or "
            "torchrun. Write the texts to a file and give its path, or predict with one process."
        )
    if sys.stdin is None:
        raise InputError("--data.predict_file -: this process has no standard input; give a file instead.")
    if sys.stdin.isatty():
        print("bertcls: reading texts from standard input, one per line (end with Ctrl-D)", file=sys.stderr)
    rows = parse_lines(sys.stdin.buffer.read(), len(columns), columns if joined else None)
    handle, path = tempfile.mkstemp(prefix="bertcls-stdin-", suffix=".jsonl")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        for texts in rows:
            file.write(json.dumps(dict(zip(columns, texts, strict=True)), ensure_ascii=False) + "\n")
    atexit.register(Path(path).unlink, missing_ok=True)
    os.environ[SPOOL_VARIABLE] = f"{os.getpid()}:{path}"
    return path


def parse_lines(content: bytes, width: int, joined_columns: list[str] | None = None) -> list[list[str]]:
    """One text (``width`` 1) or a tab-separated pair of texts (``width`` 2) per line; with ``joined_columns``, one
    tab-separated field per column of texts joined from several columns (a field may be empty: the row checks
    report a row whose joined text is).

    A byte-order mark and Windows line ends are accepted; the last line needs no line end. Invalid UTF-8,
    blank lines, blank texts and a line without exactly ``width - 1`` tabs raise a ``DataError`` naming the line.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid_utf8_error(STDIN_NAME, content, error) from error
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(
            f"{STDIN_NAME} is empty: pipe one text per line into it, e.g. "
            "`bertcls predict ... --data.predict_file - < texts.txt`."
        )
    rows = []
    for number, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            raise DataError(
                f"{STDIN_NAME}: line {number} is blank. Give one text per line without blank lines (remove them, "
                "e.g. with `grep -v '^[[:space:]]*$'`)."
            )
        texts = line.split("\t") if width > 1 else [line]
        if joined_columns:
            if len(texts) != width:
                raise DataError(
                    f"{STDIN_NAME}: line {number} has {len(texts)} tab-separated fields, but each line needs {width}, "
                    f"one per column of the texts ({', '.join(joined_columns)}), and no tab inside them."
                )
        elif len(texts) != width:
            raise DataError(
                f"{STDIN_NAME}: line {number} has {len(texts) - 1} tabs, but a text pair needs exactly one tab "
                "between its two texts (and no tab inside them)."
            )
        elif any(not piece.strip() for piece in texts):
            side = "first" if not texts[0].strip() else "second"
            raise DataError(f"{STDIN_NAME}: line {number}: the {side} text of the pair is blank. Give both texts.")
        rows.append(texts)
    return rows
