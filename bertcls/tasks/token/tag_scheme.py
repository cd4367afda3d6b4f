"""Checks of entity tag sequences in the BIO family (IOB2, IOB1, BIOES) before training on them.

Tags such as ``B-PER``/``I-PER``/``O`` carry a prefix and an entity type. Two kinds of mistakes are found:
an unprefixed tag among prefixed ones (``PER`` or ``B_PER`` beside ``B-LOC``), and, in IOB2 or BIOES data, a
continuation tag (``I-X``, ``E-X``) that does not follow ``B-X`` or ``I-X``, which is how a cut or mislabelled
entity shows. IOB1 data (``I-X`` opens an entity; ``B-X`` only separates two neighbouring entities of one type)
is recognised by having no ``B-X`` that opens an entity, and is not checked for continuations. Tag sets without
any prefix (part-of-speech tags, say) are not entity tags and are not checked.
"""

from __future__ import annotations

import re

import numpy as np

OUTSIDE = "O"
PREFIXED = re.compile(r"([BIES])-(.+)")
CONTINUATIONS = ("I", "E")


def _parts(tag: str) -> tuple[str, str] | None:
    match = PREFIXED.fullmatch(tag)
    return (match.group(1), match.group(2)) if match else None


def unprefixed_tags(sentences: list[list[str]]) -> np.ndarray:
    """Per sentence: whether it holds a tag that is neither ``O`` nor prefixed, where other tags are prefixed."""
    if not any(_parts(tag) for tags in sentences for tag in tags):
        return np.zeros(len(sentences), dtype=bool)
    return np.array([any(tag != OUTSIDE and not _parts(tag) for tag in tags) for tags in sentences], dtype=bool)


def _opens_with_begin(tags: list[str]) -> bool:
    """Whether a ``B-X`` opens an entity here (after ``O``, the start, or another type): IOB2 or BIOES, not IOB1."""
    previous: tuple[str, str] | None = None
    for tag in tags:
        parts = _parts(tag)
        if parts and parts[0] == "B" and (previous is None or previous[1] != parts[1]):
            return True
        previous = parts
    return False


def _broken(tags: list[str]) -> bool:
    """Whether an ``I-X``/``E-X`` follows anything but ``B-X`` or ``I-X``."""
    previous: tuple[str, str] | None = None
    for tag in tags:
        parts = _parts(tag)
        continues = previous is not None and previous[0] in ("B", "I") and parts is not None and previous[1] == parts[1]
        if parts and parts[0] in CONTINUATIONS and not continues:
            return True
        previous = parts
    return False


def broken_entities(sentences: list[list[str]]) -> np.ndarray:
    """Per sentence: whether a continuation tag opens an entity, in IOB2/BIOES data (see the module docstring)."""
    if not any(_opens_with_begin(tags) for tags in sentences):  # IOB1, or no entity tags at all
        return np.zeros(len(sentences), dtype=bool)
    return np.array([_broken(tags) for tags in sentences], dtype=bool)
