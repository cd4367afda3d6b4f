"""The ``LightningDataModule``: sources -> label vocabulary -> cached encoding -> bucketed loaders."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import numpy as np
import pandas as pd
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from bertcls.data.collate import DynamicPaddingCollator
from bertcls.data.dataset import TokenizedDataset
from bertcls.data.encoding import (
    CacheLock,
    EncodedSplit,
    EncodingCache,
    cache_key,
    quiet_datasets,
    tokenizer_fingerprint,
)
from bertcls.data.labels import LabelVocabulary
from bertcls.data.lazy_loader import LazyStartDataLoader
from bertcls.data.row_ids import encoded_ids, invalid_ids, with_ids
from bertcls.data.sampler import LengthBucketBatchSampler, ResumePosition
from bertcls.data.sources import (
    ROW_COLUMN,
    SKIPPED_LINES,
    ReadOptions,
    SplitSource,
    hub_split_names,
    read_source,
    select,
    source_fingerprint,
)
from bertcls.data.split_checks import (
    check_label_variety,
    encoded_hashes,
    label_spread_notes,
    overlap_note,
    text_hashes,
)
from bertcls.data.stdin import STDIN, stdin_texts_file
from bertcls.data.texts import DEFAULT_TEXT_SEPARATOR, TextColumn, as_text_column, text_name, text_parts
from bertcls.data.validation import CheckedRows, drop_or_raise
from bertcls.errors import DataError, InputError
from bertcls.paths import resolve_location
from bertcls.remote_code import load_tokenizer
from bertcls.tasks import DEFAULT_TASK, DataSpec, TaskName, get_task
from bertcls.tasks.base import LongInputs

SPLITS = ("train", "validation", "test", "predict")
DEFAULT_MAX_LENGTH = 128  # word pieces; BERT allows 512
STAGE_SPLITS = {
    "fit": ("train", "validation"),
    "validate": ("validation",),
    "test": ("test",),
    "predict": ("predict",),
}


class ClassificationDataModule(L.LightningDataModule):
    """Classification data from local files or a Hugging Face dataset, for any task.

    Args:
        task: ``single_label``, ``pair`` (two texts, one label), ``multi_label`` or ``token`` (NER); the
            CLI copies a checkpoint's task here.
        train_file, validation_file, test_file, predict_file: CSV, TSV, JSONL, Parquet or CoNLL files (local
            paths or ``pkg://package/path``). Without a validation file, a seeded ``validation_fraction`` of
            the training file's rows is held out. ``predict_file: "-"`` reads standard input, one text per
            line (a tab between the texts of a pair), see ``bertcls.data.stdin``.
        hub_dataset: a Hugging Face dataset name (or local dataset folder) used for the splits that
            have no file; ``hub_splits`` maps our split names to the dataset's (default: those of train, validation
            and test that the dataset has; without validation, ``fit`` holds it out of train).
        file_format: read every file as ``csv``, ``tsv``, ``jsonl``, ``parquet`` or ``conll`` whatever its
            suffix (default: from the suffix; ``.txt`` is TSV, or CoNLL for the token task).
        column_names: names for the columns of CSV/TSV files without a header row.
        csv_delimiter: the field separator of CSV files, when not a comma (``";"``, as spreadsheets save CSV in many
            locales); one character.
        text_column, text_pair_column: the text (and the second text of a pair; empty for none): a column name (a
            plain string, so a name like ``#1 String`` (MRPC) needs only YAML quotes), or a list of columns joined
            into one text, e.g. ``[title, description]`` (not for the token task). Each row joins the parts that
            hold text; an empty part is left out with its separator (``bertcls.data.texts``).
        text_separator: what joins the parts of a text given as a list of columns. Unset: the training run's when the
            CLI evaluates or predicts from a checkpoint, else a space (``bertcls fit`` shows it in
            ``--print_config``): a WordPiece tokenizer adds nothing for it, so the model reads one passage, as
            Hugging Face's examples join a title and a body. ``" [SEP] "`` gives BERT its separator token between
            the parts instead (one more token per part).
        label_column: the label (single-label, pair) or labels (multi-label: a list, or a delimited string
            split at ``label_delimiter``); ``label_columns``: multi-label as one 0/1 column per label.
        labels_are_indices: label values are 0-based positions in the label names (GoEmotions' "2,27").
        label_names_file: the label names, one per line (when not given by ``model.label_names``).
        drop_labels: labelled rows whose label is one of these are dropped and counted (SNLI's "-").
        normalize_labels: read labels that differ only in case or surrounding whitespace ("Pos", "neg ") as one:
            the label name they match, or in the training split their most frequent spelling (without it such
            spellings stop the run). Single-label, pair and multi-label tasks.
        tokens_column, tags_column: the token task's word and tag lists (CoNLL files provide both).
        id_column: predict: a column of unique row ids, copied to each prediction's ``id`` (default: the
            0-based row number).
        where: keep only rows whose column equals a value (or one of a list), e.g. ``{source: imdb}``.
        tokenizer: tokenizer name or folder; the CLI links it to ``model.model_name``.
        trust_remote_code: run the Python code that comes with a tokenizer whose config has an ``auto_map``
            (refused when off); the CLI links it to ``model.trust_remote_code`` (see ``BertClassifier``). Not
            saved in checkpoints.
        label_names: fixed label order; by default the sorted labels of the training split.
        max_length: longer inputs are truncated (and counted), or split into windows (token task). Unset: the
            training run's when the CLI evaluates or predicts from a checkpoint, else ``DEFAULT_MAX_LENGTH``.
        label_all_subtokens: token task: every word piece carries its word's tag in the loss, not only the first.
        long_inputs, window_stride: token task: ``split`` long sentences into windows sharing ``window_stride``
            word pieces (every word is still predicted once), or ``truncate`` them.
        batch_size: examples per batch and process; ``eval_batch_size`` for evaluation (default 2x).
        pad_to_multiple_of: round padded lengths up to this multiple; default 8 on GPUs (tensor cores like
            it), none on CPUs (where every padded token is wasted work).
        pool_batches: how many batches' worth of examples are sorted together when bucketing.
        cache_dir: where encoded splits are kept (default ``$BERTCLS_CACHE`` or ``~/.cache/bertcls``); put it
            on the shared filesystem of a cluster, so one rank tokenizes and every other one reads the result.
        cache_lock: how ranks take turns building a cache entry: ``file`` (``flock``; falls back to ``soft``
            where the filesystem has no ``flock``) or ``soft`` (a lock file created exclusively: for Lustre or
            NFS mounts whose ``flock`` is node-local). See docs/cluster.md.
        skip_invalid: drop the rows that fail the up-front checks (empty texts, missing or unknown labels, broken
            tag sequences, ...; see ``bertcls.data.validation``) and count them in the log, instead of stopping
            with an error that lists them. ``bertcls validate-data`` reports them without training.
    """

    def __init__(
        self,
        task: TaskName = DEFAULT_TASK,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        hub_dataset: str | None = None,
        hub_config: str | None = None,
        hub_splits: dict[str, str] | None = None,
        file_format: str | None = None,
        column_names: list[str] | None = None,
        csv_delimiter: str | None = None,
        text_column: str | list[str] = "text",
        text_pair_column: str | list[str] = "",
        text_separator: str | None = None,
        label_column: str = "label",
        label_columns: list[str] | None = None,
        label_delimiter: str = ",",
        labels_are_indices: bool = False,
        label_names_file: str | None = None,
        drop_labels: list[str] | None = None,
        normalize_labels: bool = False,
        tokens_column: str = "tokens",
        tags_column: str = "tags",
        id_column: str | None = None,
        where: dict[str, Any] | None = None,
        validation_fraction: float = 0.1,
        split_seed: int = 42,
        tokenizer: str = "bert-base-uncased",
        label_names: list[str] | None = None,
        max_length: int | None = None,
        label_all_subtokens: bool = False,
        long_inputs: LongInputs = "split",
        window_stride: int = 32,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        pad_to_multiple_of: int | None = None,
        pool_batches: int = 64,
        num_workers: int = 0,
        cache_dir: str | None = None,
        cache_lock: CacheLock = "file",
        skip_invalid: bool = False,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["trust_remote_code"])
        self.trust_remote_code = trust_remote_code
        # Checkpoints keep the number; 0 is refused below, not read as unset.
        max_length = self.hparams.max_length = DEFAULT_MAX_LENGTH if max_length is None else max_length
        self.task = get_task(task)
        text, pair = as_text_column(text_column) or "", as_text_column(text_pair_column)
        self.task.check_text_columns(text, pair)
        separator = DEFAULT_TEXT_SEPARATOR if text_separator is None else text_separator
        self.hparams.text_separator = separator  # checkpoints keep the string the texts were joined with
        files = {"train": train_file, "validation": validation_file, "test": test_file, "predict": predict_file}
        hub_names = (hub_splits or default_hub_splits(hub_dataset, hub_config)) if hub_dataset else {}
        self.sources: dict[str, SplitSource] = {}
        if predict_file == STDIN:
            pair = self._stdin_source(text, pair, id_column)
        for split in SPLITS:
            if split in self.sources:
                continue
            if files[split]:
                self.sources[split] = SplitSource(files[split])
            elif hub_dataset and split in hub_names:
                self.sources[split] = SplitSource(hub_dataset, hub_names[split], hub_config)
        if not 0 < validation_fraction < 1:
            raise InputError(
                f"data.validation_fraction {validation_fraction}: the share of the training rows held out for "
                "validation (when no data.validation_file is given) must be between 0 and 1, e.g. 0.1."
            )
        self.spec = DataSpec(
            text_column=text,
            text_pair_column=pair,
            text_separator=separator,
            label_column=label_column,
            label_columns=tuple(label_columns) if label_columns else None,
            label_delimiter=label_delimiter,
            labels_are_indices=labels_are_indices,
            drop_labels=tuple(drop_labels) if drop_labels is not None else DataSpec.drop_labels,
            tokens_column=tokens_column,
            tags_column=tags_column,
            max_length=max_length,
            label_all_subtokens=label_all_subtokens,
            long_inputs=long_inputs,
            window_stride=window_stride,
        )
        check_max_length(max_length, len(self.spec.texts))
        self.read_options = ReadOptions(
            file_format,
            self.task.txt_format,
            tuple(column_names) if column_names else None,
            text_columns=tuple(part for column in self.spec.texts for part in text_parts(column)),
            skip_bad_lines=skip_invalid,
            csv_delimiter=check_csv_delimiter(csv_delimiter),
        )
        self.cache = EncodingCache(cache_dir, cache_lock)
        names = label_names or (_read_label_names(label_names_file) if label_names_file else None)
        if labels_are_indices and not names:
            raise InputError("data.labels_are_indices needs the label names: set data.label_names_file.")
        self.vocabulary: LabelVocabulary | None = LabelVocabulary.from_names(names) if names else None
        self._vocabulary_given = self.vocabulary is not None
        self.datasets: dict[str, TokenizedDataset] = {}
        self._resume = ResumePosition()  # from a checkpoint; the training sampler reads it when the epoch starts
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._fingerprints: dict[str, str] = {}
        self._tokenizer_fingerprint = ""

    def _stdin_source(
        self, text_column: TextColumn, text_pair_column: TextColumn | None, id_column: str | None
    ) -> TextColumn | None:
        """Read standard input into the predict source; returns the text pair column (``text_pair`` by default).

        A line holds one field per source column of the texts, tab-separated: ``title<TAB>description`` for
        ``text_column: [title, description]``."""
        if id_column:
            raise InputError(
                "data.id_column: standard input has no columns, only one text per line; leave data.id_column unset "
                "(each prediction's id is then its 0-based line number)."
            )
        if self.task.name == "pair":
            text_pair_column = text_pair_column or "text_pair"
        texts = [text_column] + ([text_pair_column] if text_pair_column and self.task.name != "token" else [])
        joined = any(not isinstance(text, str) for text in texts)  # fields of joined texts may be empty
        columns = [part for text in texts for part in text_parts(text)]
        self.sources["predict"] = SplitSource(stdin_texts_file(columns, joined), stdin=True)
        return text_pair_column

    # --- what the model needs to know -------------------------------------------------------
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            try:
                self._tokenizer = load_tokenizer(self.hparams.tokenizer, "data.tokenizer", self.trust_remote_code)
            except OSError as error:  # not a folder, not on the hub, or offline without a cached copy
                name = self.hparams.tokenizer
                raise InputError(
                    f"data.tokenizer '{name}' (the tokenizer of model.model_name, unless set apart): {error}"
                ) from error
            # Fingerprint before any call: calls change the tokenizer's truncation state.
            self._tokenizer_fingerprint = tokenizer_fingerprint(self._tokenizer)
        return self._tokenizer

    @property
    def tokenizer_fingerprint(self) -> str:
        self.tokenizer  # noqa: B018 -- loading the tokenizer records its fingerprint
        return self._tokenizer_fingerprint

    @property
    def label_names(self) -> list[str]:
        if self.vocabulary is None:
            raise RuntimeError("The label vocabulary is known only after setup() or build_cache().")
        return list(self.vocabulary.names)

    def label_statistics(self) -> tuple[np.ndarray, int]:
        """Per-label counts in the training set and its number of labelled units (for balanced loss weights)."""
        return self.task.label_counts(self.datasets["train"], len(self.label_names))

    # --- encoding and caching ---------------------------------------------------------------
    def _split_key(self, split: str, vocabulary: LabelVocabulary | None) -> str:
        if split not in self._fingerprints:  # hashing a large file once per run is enough
            self._fingerprints[split] = source_fingerprint(self.sources[split])
        return cache_key(
            source=self._fingerprints[split],
            task=self.task.name,
            labelled=split != "predict",
            spec=self.spec,
            read=self.read_options,
            where=self.hparams.where,
            tokenizer=self.tokenizer_fingerprint,
            labels=list(vocabulary.names) if vocabulary else "from-this-split",
            # Only when set, so that the keys of every other split stay those of earlier versions.
            **({"ids": self.hparams.id_column} if split == "predict" and self.hparams.id_column else {}),
            **({"normalize_labels": True} if self.hparams.normalize_labels and split != "predict" else {}),
            **({"text_separator": self.spec.text_separator} if self._joins_texts else {}),
            **({"csv_delimiter": self.read_options.csv_delimiter} if self.read_options.csv_delimiter else {}),
        )

    @property
    def _joins_texts(self) -> bool:
        return any(not isinstance(text, str) for text in self.spec.texts)

    def _rows(self, split: str, vocabulary: LabelVocabulary | None) -> CheckedRows:
        """The split's rows (columns selected, ``data.where`` applied, unlabelled rows dropped) and the problems
        ``Task.invalid_rows`` finds in them, not yet dropped."""
        source = self.sources[split]
        where = source.describe()
        labelled = split != "predict"
        frame = read_source(source, self.read_options)
        skipped_lines = frame.attrs.pop(SKIPPED_LINES, [])
        columns = self.task.columns(self.spec, labelled, [str(column) for column in frame.columns])
        id_column = self.hparams.id_column if split == "predict" else None
        wanted = list(dict.fromkeys([*columns, id_column] if id_column else columns))
        frame = select(frame, source, wanted, self.hparams.where)
        notes: list[str] = []
        if labelled:
            frame, note = self.task.select_rows(frame, self.spec, where)
            notes += [note] if note else []
            if self.hparams.normalize_labels:
                frame, note = self.task.normalize_labels(frame, self.spec, vocabulary, where)
                notes += [note] if note else []
            if vocabulary is None:  # the labels this split's vocabulary is built from
                notes += self.task.label_warnings(frame, self.spec, where)
        invalid = self.task.invalid_rows(frame, self.spec, vocabulary if labelled else None, labelled)
        invalid += invalid_ids(frame, id_column) if id_column else []
        return CheckedRows(frame, notes, invalid, skipped_lines)

    def check_rows(self) -> dict[str, CheckedRows | DataError]:
        """Every configured split's rows and problems as ``fit``, ``test`` and ``predict`` find them, without
        tokenizing (``bertcls validate-data``); a split that cannot be read at all maps to its error.

        Validation and test labels are checked against the given label names, or else the training split's labels
        (of its valid rows). A hub dataset's test split is left out, as ``fit`` leaves it out.
        """
        checked: dict[str, CheckedRows | DataError] = {}
        vocabulary = self.vocabulary
        for split in self.sources:
            if split == "test" and self.sources[split].is_hub:
                continue  # as in fit (see _splits_for): a hub test split may have no labels
            try:
                checked[split] = rows = self._rows(split, vocabulary)
                if split == "train" and (
                    self.hparams.skip_invalid or not rows.invalid_mask.any()
                ):  # as fit: rows first
                    valid = rows.frame[~rows.invalid_mask]
                    rows.notes.extend(self._check_training_labels(valid, self.sources[split].describe()))
                if split == "train" and vocabulary is None:
                    valid = rows.frame[~rows.invalid_mask]
                    vocabulary = self.vocabulary = self.task.vocabulary(
                        valid, self.spec, self.sources[split].describe()
                    )
            except DataError as error:
                checked[split] = error
        train, validation = checked.get("train"), checked.get("validation")
        if isinstance(train, CheckedRows) and isinstance(validation, CheckedRows):
            hashes = [self._text_hashes(rows.frame[~rows.invalid_mask]) for rows in (train, validation)]
            note = overlap_note(*hashes, self.sources["train"].describe(), self.sources["validation"].describe())
            validation.notes.extend([note] if note else [])
        return checked

    def _text_hashes(self, frame: pd.DataFrame) -> np.ndarray:
        return text_hashes(frame, self.task.columns(self.spec, False, [str(column) for column in frame.columns]))

    def _check_training_labels(self, frame: pd.DataFrame, where: str) -> list[str]:
        """Refuse a training split with fewer than two labels; warnings on labels that look wrong
        (``bertcls.data.split_checks``)."""
        counts = self.task.label_occurrences(frame, self.spec, where)
        check_label_variety(counts, where, str(counts.name), self.task.name)
        return label_spread_notes(counts, where, str(counts.name), text_name(self.spec.text_column))

    def _encode(self, split: str, vocabulary: LabelVocabulary | None) -> EncodedSplit:
        where = self.sources[split].describe()
        labelled = split != "predict"
        rows = self._rows(split, vocabulary)
        frame, dropped, note = drop_or_raise(rows, where, self.hparams.skip_invalid)
        notes = rows.skipped_lines_note(where) + rows.notes + ([note] if note else [])
        if labelled and vocabulary is None:
            vocabulary = self.task.vocabulary(frame, self.spec, where)
        if split == "train":
            notes += self._check_training_labels(frame, where)
        encoded = self.task.encode(frame, self.tokenizer, self.spec, vocabulary if labelled else None, where)
        meta = encoded.meta | {"notes": notes + encoded.meta.get("notes", [])}
        meta["skipped_invalid"] = dropped + len(rows.skipped_lines)
        if labelled:
            meta["label_names"] = list(vocabulary.names)
        id_column = self.hparams.id_column if split == "predict" else None
        table = with_ids(encoded.table, encoded_ids(frame, id_column)) if id_column else encoded.table
        return EncodedSplit(table, meta)

    def _load_or_encode(self, split: str, vocabulary: LabelVocabulary | None) -> EncodedSplit:
        key = self._split_key(split, vocabulary)

        def encode() -> EncodedSplit:
            rank_zero_info(f"Tokenizing {self.sources[split].describe()} (cache: {self.cache.path(key)})")
            return self._encode(split, vocabulary)

        return self.cache.get_or_build(key, encode)

    def _splits_for(self, stage: str | None) -> tuple[str, ...]:
        """The splits a stage reads; ``None`` (no trainer) means every configured split.

        Without a validation source, "validation" is held out of "train", so "train" is read instead. ``fit`` also
        reads a test *file*: its rows are checked (and its encoding cached) before training, so that a bad row
        there stops the job now rather than after hours of training. (A hub dataset's test split is left out:
        GLUE's, for one, has no labels.)
        """
        if stage is None:
            return tuple(self.sources)
        splits = STAGE_SPLITS[stage]
        if self._holds_out_validation:
            splits = tuple(dict.fromkeys("train" if split == "validation" else split for split in splits))
        missing = [split for split in splits if split not in self.sources]
        if missing and self.hparams.hub_dataset:
            raise DataError(
                f"No data for the {missing[0]} split: data.hub_dataset '{self.hparams.hub_dataset}' has no such split "
                f"(bertcls reads its {sorted(self.sources)}). Map it with data.hub_splits, e.g. "
                f"{{{missing[0]}: <the dataset's split name>}}, or set data.{missing[0]}_file."
            )
        if missing:
            raise DataError(
                f"No data for the {missing[0]} split: set data.{missing[0]}_file (or data.hub_dataset) in your config."
            )
        if stage == "fit" and self.hparams.test_file:
            splits += ("test",)
        return splits

    @property
    def _holds_out_validation(self) -> bool:
        return "validation" not in self.sources and "train" in self.sources

    def _vocabulary(self) -> LabelVocabulary:
        """The given label names, or those of the training split (encoding it if not cached)."""
        if self.vocabulary is None:
            if "train" not in self.sources:
                raise DataError("The label names are unknown: set data.train_file, or model.label_names.")
            self.vocabulary = LabelVocabulary.from_names(self._load_or_encode("train", None).meta["label_names"])
        return self.vocabulary

    def _encoded(self, split: str) -> EncodedSplit:
        if split == "predict":
            return self._load_or_encode(split, None)
        if split == "train" and not self._vocabulary_given:
            return self._load_or_encode(split, None)  # the vocabulary comes from this split
        return self._load_or_encode(split, self._vocabulary())

    def build_cache(self, stage: str | None = None) -> None:
        """Tokenize and cache the splits ``stage`` needs (default: every configured split), without loading them.

        Not ``prepare_data``: Lightning would make every other rank wait in a collective meanwhile, and a
        large dataset outlasts collective time-outs. ``setup`` builds what is missing under the cache's
        file lock instead; this method does the same ahead of a run (``bertcls download``, tests).
        """
        for split in self._splits_for(stage):
            self._encoded(split)

    def setup(self, stage: str) -> None:
        splits = self._splits_for(stage)
        encoded_splits: dict[str, EncodedSplit] = {}
        for split in splits:
            encoded = encoded_splits[split] = self._encoded(split)
            self._report(split, encoded)
            if split == "train" and self._holds_out_validation:
                self._hold_out_validation(encoded)
            else:
                self.datasets[split] = TokenizedDataset(encoded)
        if any(split != "predict" for split in splits):
            self._vocabulary()  # known from here on: the model builds its head from it
        if "train" in encoded_splits and "validation" in encoded_splits:  # a validation file, not a held-out share
            hashes = [encoded_hashes(encoded_splits[split].table) for split in ("train", "validation")]
            note = overlap_note(*hashes, self.sources["train"].describe(), self.sources["validation"].describe())
            if note:
                rank_zero_info(note)

    def _hold_out_validation(self, full: EncodedSplit) -> None:
        """Split the training file's rows into train and validation with the seeded ``validation_fraction``.

        Whole source rows go to one side (a long sentence's windows stay together). With one example per
        row this is exactly ``datasets.Dataset.train_test_split`` of the examples.
        """
        rows = np.asarray(full.table[ROW_COLUMN])
        unique, first = np.unique(rows, return_index=True)
        ordered = unique[np.argsort(first)]
        parts = datasets.Dataset.from_dict({ROW_COLUMN: ordered}).train_test_split(
            test_size=self.hparams.validation_fraction, seed=self.hparams.split_seed
        )
        examples_of: dict[int, list[int]] = {}
        for index, row in enumerate(rows.tolist()):
            examples_of.setdefault(row, []).append(index)
        for split, part in (("train", parts["train"]), ("validation", parts["test"])):
            indices = [index for row in part[ROW_COLUMN] for index in examples_of[row]]
            with quiet_datasets():
                table = full.table.select(indices).flatten_indices()
            self.datasets[split] = TokenizedDataset(EncodedSplit(table, full.meta))

    def _report(self, split: str, encoded: EncodedSplit) -> None:
        """Log what encoding noticed: truncated inputs, dropped rows, split sentences; and with
        ``skip_invalid`` the number of rows skipped as invalid, to the run's loggers.

        Not for the predict split: the prediction writer reports its notes after predicting.
        """
        if split == "predict":
            return
        where = self.sources[split].describe()
        for note in encoded.meta.get("notes", []):
            rank_zero_info(note if note.startswith(where) else f"{where}: {note}")
        if self.hparams.skip_invalid and self.trainer is not None:  # the count goes to W&B/CSV/TensorBoard too
            for logger in self.trainer.loggers:  # rank 0 only, as every logger call
                logger.log_metrics({f"data/{split}_skipped_invalid": encoded.meta.get("skipped_invalid", 0)}, step=0)

    # --- resuming mid-epoch ------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """How far training is into its epoch; Lightning stores this in every checkpoint it saves.

        ``processed`` counts the batches whose optimizer work is done, which is also how many Lightning's
        loop counts as done when it resumes from that checkpoint.
        """
        trainer = self.trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": trainer.current_epoch, "batches_done": done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume the training order where the checkpoint left it, instead of replaying the epoch.

        Under DeepSpeed and FSDP this runs after the training loader was built; its sampler reads the position
        when it starts the epoch, so the order is the same whenever (and however often) the loader is built.
        """
        if state:
            self._resume.set(state["epoch"], state["batches_done"])
        else:
            self._resume.clear()

    # --- loaders ----------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool, resume: ResumePosition | None = None) -> DataLoader:
        """A loader of ``split``; given a ``resume`` position (training), one that the position applies to whenever
        it arrives before the first batch."""
        dataset = self.datasets[split]
        trainer = self.trainer
        batch_size = self.hparams.batch_size if shuffle else self.hparams.eval_batch_size or 2 * self.hparams.batch_size
        sampler = LengthBucketBatchSampler(
            lengths=dataset.lengths,
            max_batch_size=batch_size,
            shuffle=shuffle,
            seed=_global_seed(default=self.hparams.split_seed),
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            pool_batches=self.hparams.pool_batches,
            resume=resume,
        )
        loader_class = DataLoader if resume is None else LazyStartDataLoader
        return loader_class(
            dataset,
            batch_sampler=sampler,
            collate_fn=self.collator,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            pin_memory=self._on_gpu,
        )

    @property
    def _on_gpu(self) -> bool:
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    @property
    def collator(self) -> Callable:
        multiple = self.hparams.pad_to_multiple_of
        if multiple is None:
            multiple = 8 if self._on_gpu else None
        return DynamicPaddingCollator(self.tokenizer.pad_token_id, multiple, self.task.padded_columns)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, resume=self._resume)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)


def default_hub_splits(location: str, config: str | None) -> dict[str, str]:
    """train/validation/test, each under its own name, where the dataset has it (all three where it cannot say)."""
    names = {"train": "train", "validation": "validation", "test": "test"}
    available = hub_split_names(location, config)
    return {split: name for split, name in names.items() if available is None or name in available}


def check_csv_delimiter(delimiter: str | None) -> str | None:
    """``data.csv_delimiter`` as read (None for the comma, the default); refused unless one separator character."""
    if delimiter is None or delimiter == ",":
        return None
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise InputError(
            f"data.csv_delimiter {delimiter!r}: the field separator of CSV files is one character other than a quote "
            "or a line break, e.g. ';' (quote it in YAML and on the command line: --data.csv_delimiter ';')."
        )
    return delimiter


def check_max_length(max_length: int, texts: int) -> None:
    """Refuse a ``max_length`` that holds no word piece of each text besides the special tokens (BERT's)."""
    shortest = 1 + 2 * texts  # [CLS] text [SEP], or [CLS] a [SEP] b [SEP]
    if max_length < shortest:
        layout = "[CLS] text [SEP]" if texts == 1 else "[CLS] text [SEP] text_pair [SEP]"
        raise InputError(
            f"data.max_length {max_length} leaves no room for text: an input is {layout} in word pieces. Give at "
            f"least {shortest}, e.g. {DEFAULT_MAX_LENGTH} (the default), at most the encoder's limit (512 for BERT)."
        )


def _read_label_names(path: str) -> list[str]:
    resolved = resolve_location(path)
    if not Path(resolved).is_file():
        raise InputError(f"data.label_names_file {path}: file not found.")
    return [line.strip() for line in Path(resolved).read_text(encoding="utf-8").splitlines() if line.strip()]


def _global_seed(default: int) -> int:
    """The run's seed as set by ``seed_everything`` (the CLI's ``seed_everything``), so data order follows it."""
    return int(os.environ.get("PL_GLOBAL_SEED", default))
