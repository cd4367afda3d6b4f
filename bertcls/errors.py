"""Errors caused by the user's input, reported by the CLI as one message (no traceback)."""

from collections.abc import Iterator
from contextlib import contextmanager


class InputError(ValueError):
    """Bad configuration or input: the message names what is wrong, where, and how to fix it."""


class DataError(InputError):
    """Bad input data: the message names the file, the row or column, and the fix."""


@contextmanager
def reported_as_exit() -> Iterator[None]:
    """End a command on bad input with ``bertcls: error: <message>`` (``data error`` for data), no traceback."""
    try:
        yield
    except InputError as error:
        kind = "data error" if isinstance(error, DataError) else "error"
        raise SystemExit(f"bertcls: {kind}: {error}") from error


def custom_code_refused(setting: str, location: str) -> InputError:
    """The error for a model or tokenizer folder whose ``auto_map`` asks to run its own Python code."""
    return InputError(
        f"{setting} '{location}' asks to run its own Python code (an 'auto_map' entry in its config): bertcls "
        "never runs code that comes with a model (transformers' trust_remote_code stays off, and it does not ask). "
        "Use a checkpoint of an architecture transformers ships (BERT and its family do not need custom code), or "
        "inspect that code and convert the checkpoint to such an architecture."
    )
