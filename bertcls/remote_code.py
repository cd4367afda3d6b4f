"""Python code that comes with a model or tokenizer (an ``auto_map`` in its config): run only when the user opts in.

transformers' ``trust_remote_code`` is passed as ``True`` or ``False``, never left unset: unset, transformers
asks on a terminal (and waits), and refuses elsewhere. ``False`` is the default everywhere in bertcls; the user
turns it on with ``--model.trust_remote_code true`` (``bertcls export --trust-remote-code``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lightning.pytorch.utilities import rank_zero_warn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from bertcls.errors import custom_code_refused
from bertcls.paths import model_location


@contextmanager
def custom_code_policy(setting: str, name: str, location: str, trust_remote_code: bool) -> Iterator[None]:
    """Around a transformers load of ``location`` (``name``, the value of ``setting``, resolved).

    With ``trust_remote_code`` on, warn that the code it names will run; off, turn transformers' refusal (a
    ValueError that names ``trust_remote_code``) into :func:`custom_code_refused`.
    """
    if trust_remote_code:
        rank_zero_warn(
            f"trust_remote_code is on: Python code that comes with {setting} '{location}' (the files its config's "
            "auto_map names) runs in this process, with your permissions."
        )
    try:
        yield
    except ValueError as error:
        if trust_remote_code or "trust_remote_code" not in str(error):
            raise
        raise custom_code_refused(setting, name) from error


def load_tokenizer(name: str, setting: str, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """The tokenizer ``name`` (hub name, folder or ``pkg://`` path: the value of ``setting``) under that policy.

    An OSError (no such folder, not on the hub, offline without a cached copy) is left to the caller.
    """
    location = model_location(name, setting)
    with custom_code_policy(setting, name, location, trust_remote_code):
        return AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
