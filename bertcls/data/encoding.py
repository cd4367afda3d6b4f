"""Tokenize a split once with the fast tokenizer and keep the result in an on-disk cache.

A cache entry is a ``datasets`` folder (``save_to_disk``) plus ``meta.json``, stored under a key that
hashes everything the encoding depends on: the source's content, the columns and row filter, the
tokenizer's full serialization, the maximum length and the label vocabulary. Entries are written to a
temporary folder and renamed into place, so a crash never leaves a half-written entry, and several
processes writing the same entry at once do no harm.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import filelock
import pandas as pd
from transformers import PreTrainedTokenizerBase

from bertcls.atomic_files import raise_if_out_of_space
from bertcls.data.sources import ROW_COLUMN
from bertcls.data.texts import DEFAULT_TEXT_SEPARATOR, TextColumn, text_name, with_texts

# 3: CSV/TSV text columns read as text ("007" was 7). 4: rows are checked before encoding (whitespace-only texts,
# mixed label kinds, broken tag sequences...); older entries were built without those checks.
CACHE_FORMAT_VERSION = 4
SOFT_LOCK_LIFETIME_SECONDS = 24 * 3600
CacheLock = Literal["file", "soft"]
ENCODE_BATCH_SIZE = 1000


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """Hide ``datasets``' progress bars (bertcls logs one line per split instead)."""
    was_disabled = datasets.is_progress_bar_enabled() is False
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def default_cache_dir() -> Path:
    return Path(os.environ.get("BERTCLS_CACHE", Path.home() / ".cache" / "bertcls"))


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of the tokenizer's complete serialization (vocabulary, normalizer, special tokens)."""
    if not tokenizer.is_fast:
        raise TypeError(f"{tokenizer.name_or_path}: bertcls needs a fast (Rust) tokenizer.")
    state = type(tokenizer).__name__ + tokenizer.backend_tokenizer.to_str()
    return hashlib.sha256(state.encode()).hexdigest()


def cache_key(**parts: Any) -> str:
    payload = json.dumps({"format": CACHE_FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class EncodedSplit:
    """A tokenized split: ``input_ids``, ``labels`` (when labelled), ``row`` and task columns, plus statistics.

    ``meta`` holds ``num_examples``, ``num_truncated`` (inputs cut at ``max_length``), ``label_names``,
    ``notes`` (lines for the log: truncation, dropped rows) and any task-specific counts.
    """

    table: datasets.Dataset
    meta: dict[str, Any]

    @property
    def num_truncated(self) -> int:
        return int(self.meta["num_truncated"])


def encode_texts(
    frame: pd.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    text_column: TextColumn,
    text_pair_column: TextColumn | None,
    max_length: int,
    labels: list | None,
    where: str,
    separator: str = DEFAULT_TEXT_SEPARATOR,
) -> EncodedSplit:
    """Tokenize one text (or a text pair) per row via ``datasets.map``, truncating at ``max_length``.

    A pair is encoded as ``[CLS] a [SEP] b [SEP]`` with ``token_type_ids``; truncation trims the longer
    side first. A text of several columns is their parts joined by ``separator`` (``bertcls.data.texts``).
    ``labels`` (one value or list per row) is stored as the ``labels`` column.
    """
    frame = with_texts(frame, [column for column in (text_column, text_pair_column) if column], separator)
    texts = frame[text_name(text_column)].astype(str).tolist()
    columns: dict[str, Any] = {"text": texts, ROW_COLUMN: frame[ROW_COLUMN].tolist()}
    if text_pair_column:
        columns["text_pair"] = frame[text_name(text_pair_column)].astype(str).tolist()
    if labels is not None:
        columns["labels"] = labels
    raw = datasets.Dataset.from_dict(columns)
    text_keys = ["text", "text_pair"] if text_pair_column else ["text"]

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(
            batch["text"],
            batch.get("text_pair"),
            truncation="longest_first",
            max_length=max_length,
            return_token_type_ids=text_pair_column is not None,
        )
        truncated = [len(encoding.overflowing) > 0 for encoding in encoded.encodings]
        outputs = {"input_ids": encoded["input_ids"], "truncated": truncated}
        outputs["full_length"] = full_lengths(tokenizer, batch, encoded["input_ids"], truncated)
        if text_pair_column:
            outputs["token_type_ids"] = encoded["token_type_ids"]
        return outputs

    with quiet_datasets():
        table = raw.map(tokenize, batched=True, batch_size=ENCODE_BATCH_SIZE, remove_columns=text_keys)
    num_truncated = int(sum(table["truncated"]))
    longest = max(table["full_length"], default=0)
    table = table.remove_columns(["truncated", "full_length"])
    meta = {"num_examples": len(table), "num_truncated": num_truncated, "max_length": max_length, "notes": []}
    meta["longest_length"] = longest
    if num_truncated:
        share = 100 * num_truncated / len(table)
        meta["notes"].append(
            f"{where}: {num_truncated} of {len(table)} inputs ({share:.1f}%) are longer than max_length={max_length} "
            f"tokens (the longest has {longest}) and were cut to {max_length} tokens; raise "
            "data.max_length (at most the encoder's limit, 512 for BERT) to keep more."
        )
    return EncodedSplit(table=table, meta=meta)


def full_lengths(
    tokenizer: PreTrainedTokenizerBase, batch: dict[str, list], input_ids: list[list[int]], truncated: list[bool]
) -> list[int]:
    """Each input's length in tokens before truncation; only the truncated inputs are tokenized again."""
    lengths = [len(ids) for ids in input_ids]
    cut = [index for index, was_cut in enumerate(truncated) if was_cut]
    if cut:
        pairs = [batch["text_pair"][index] for index in cut] if "text_pair" in batch else None
        whole = tokenizer([batch["text"][index] for index in cut], pairs, verbose=False)["input_ids"]
        for index, ids in zip(cut, whole, strict=True):
            lengths[index] = len(ids)
    return lengths


class EncodingCache:
    """Folder of encoded splits, one sub-folder per cache key.

    Ranks that need an entry nobody has built take turns on a per-entry lock file: the first builds it,
    the others wait on the lock (not in a collective that could time out) and then read the result.
    The lock only saves duplicate work; a write is an atomic rename either way.
    """

    def __init__(self, root: str | Path | None = None, lock: CacheLock = "file") -> None:
        self.root = Path(root) if root else default_cache_dir()
        if lock not in ("file", "soft"):
            raise ValueError(f"cache lock must be 'file' or 'soft', got {lock!r}")
        self.lock_kind = lock

    def path(self, key: str) -> Path:
        return self.root / key

    def lock(self, key: str) -> filelock.BaseFileLock:
        path = self.root / f".{key}.lock"
        if self.lock_kind == "soft":
            # A holder killed outright leaves its lock file behind: after a day it counts as abandoned.
            return filelock.SoftFileLock(path, lifetime=SOFT_LOCK_LIFETIME_SECONDS)
        return filelock.FileLock(path)

    def get_or_build(self, key: str, build: Callable[[], EncodedSplit]) -> EncodedSplit:
        """The entry ``key``, built with ``build()`` by whichever process gets the lock first."""
        if not self.contains(key):
            self.root.mkdir(parents=True, exist_ok=True)
            with self.lock(key):
                if not self.contains(key):  # nobody built it while this process waited
                    self.save(key, build())
        return self.load(key)

    def contains(self, key: str) -> bool:
        return (self.path(key) / "meta.json").is_file()

    def load(self, key: str) -> EncodedSplit:
        folder = self.path(key)
        meta = json.loads((folder / "meta.json").read_text())
        return EncodedSplit(table=datasets.load_from_disk(str(folder / "table")), meta=meta)

    def save(self, key: str, split: EncodedSplit) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
        try:
            with quiet_datasets():
                split.table.save_to_disk(str(staging / "table"))
            (staging / "meta.json").write_text(json.dumps(split.meta))
            try:
                os.rename(staging, self.path(key))
            except OSError:
                if not self.contains(key):  # another process did not win the race: a real failure
                    raise
        except Exception as error:
            raise_if_out_of_space(
                error,
                f"the tokenization cache in {self.root} (nothing half-written is kept). Free space there, or point "
                "data.cache_dir (or $BERTCLS_CACHE) at a filesystem with room.",
            )
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
