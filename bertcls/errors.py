"""Errors caused by the user's input, reported by the CLI as one message (no traceback)."""


class InputError(ValueError):
    """Bad configuration or input: the message names what is wrong, where, and how to fix it."""


class DataError(InputError):
    """Bad input data: the message names the file, the row or column, and the fix."""
