"""Files written whole or not at all: a kill, a full disk or a crash of the node leaves the previous version."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a hidden file beside ``path``, flush it to disk, then rename it over ``path``.

    A reader sees the old file or the new one, never a mixture. Staging files left by a killed writer
    are removed by the next write of the same path.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.partial"):
        stale.unlink(missing_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(staging, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, target)
    except Exception as error:
        fix = "Free space (or raise the quota) on that filesystem, or write elsewhere, and run again."
        raise_if_out_of_space(error, f"{target}: any previous {target.name} there is unchanged. {fix}")
        raise
    finally:
        staging.unlink(missing_ok=True)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash of the node
    finally:
        os.close(directory)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def raise_if_out_of_space(error: BaseException, what: str) -> None:
    """If ``error`` comes from a full disk or an exceeded quota, raise an ``OSError`` saying so while writing ``what``
    (the file, what is left intact and the fix); otherwise return, for the caller to re-raise ``error``."""
    full = out_of_space(error)
    if full is not None:
        raise OSError(full.errno, f"{os.strerror(full.errno)} while writing {what}") from error


def out_of_space(error: BaseException | None) -> OSError | None:
    """The "disk full" or "quota exceeded" error behind ``error``, if any (torch.save wraps it in a RuntimeError)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        error = error.__cause__ or error.__context__
    return None
