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
        "does not run code that comes with a model unless told to (transformers' trust_remote_code is off, and it "
        "does not ask). Use a checkpoint of an architecture transformers ships (BERT and its family need no custom "
        "code); or read that code (the .py files the auto_map names, in that folder or hub repository) and, if you "
        "trust it, opt in with --model.trust_remote_code true (bertcls export: --trust-remote-code), on every "
        "command that loads this model or a checkpoint of it."
    )
