"""The contract between the shared pipeline and one kind of classification (a *task*).

The data module and the ``LightningModule`` know nothing about labels, heads or metrics: they ask the
task. A task says which columns a split needs, how its labels are encoded and padded, which head sits on
the encoder, how it is evaluated and how predictions are written. Adding a task means one new module in
``bertcls/tasks/`` with a ``Task`` subclass, its head and its evaluator, and one line in ``TASKS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from bertcls.data.dataset import TokenizedDataset
from bertcls.data.encoding import EncodedSplit
from bertcls.data.labels import LabelVocabulary
from bertcls.data.texts import DEFAULT_TEXT_SEPARATOR, TextColumn, text_name, text_parts, with_texts
from bertcls.data.validation import InvalidRows, blank_texts, non_texts
from bertcls.errors import InputError
from bertcls.model.pooling import Pooling, pool
from bertcls.reporting.report import TestReport

LongInputs = Literal["truncate", "split"]


@dataclass(frozen=True)
class DataSpec:
    """The data module's settings that a task reads when it selects columns and encodes a split."""

    text_column: TextColumn = "text"  # a column, or columns joined into one text (``bertcls.data.texts``)
    text_pair_column: TextColumn | None = None
    # Out of the repr (which cache keys hash): the data module adds it to a key only where columns are joined.
    text_separator: str = field(default=DEFAULT_TEXT_SEPARATOR, repr=False)
    label_column: str = "label"
    label_columns: tuple[str, ...] | None = None  # multi-label: one 0/1 column per label
    label_delimiter: str = ","  # multi-label: labels in one string, "2,17,25"
    labels_are_indices: bool = False  # label values are 0-based positions in the label names
    drop_labels: tuple[str, ...] = ("-",)  # rows with these labels have no gold label (SNLI's "-"): dropped
    tokens_column: str = "tokens"  # token task: a list of words per row
    tags_column: str = "tags"  # token task: a list of tags per row, one per word
    max_length: int = 128
    label_all_subtokens: bool = False  # token task: every word piece carries its word's label in the loss
    long_inputs: LongInputs = "split"  # token task: windows over long sentences, or truncation
    window_stride: int = 32  # token task: word pieces shared by neighbouring windows

    @property
    def texts(self) -> list[TextColumn]:
        """The text, and the pair's second text when there is one."""
        return [self.text_column] + ([self.text_pair_column] if self.text_pair_column else [])


@dataclass(frozen=True)
class HeadOptions:
    """The model's settings that a head reads."""

    dropout: float
    pooling: Pooling = "cls"
    loss_weights: torch.Tensor | None = None  # per label, in label order (multi-label: positive-class weights)
    label_smoothing: float = 0.0
    threshold: float = 0.5  # multi-label: the global decision threshold
    tune_thresholds: bool = True  # multi-label: tune per-label thresholds on the validation split


class TaskHead(nn.Module, ABC):
    """Maps the encoder's token states to logits, and logits to a loss and to predictions.

    A head keeps ``HeadOptions.loss_weights`` as a persistent buffer named ``loss_weights`` (None when not
    weighted), so that weights computed from the training data travel with the checkpoint. A head's own buffers
    (loss weights, decision thresholds) are settings, not activations: they stay fp32 when the model is cast to
    bf16 or fp16 (``bf16-true``; DeepSpeed before 0.19.4 casts every buffer with the weights).
    """

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> TaskHead:
        """Move and cast as any module does, except that the head's own buffers only move (keep their dtype)."""
        # torch.nn.Module applies .to() / .bfloat16() / .half() through _apply: the one place to keep the dtype.
        own = dict(self._buffers)
        super()._apply(fn, recurse)
        for name, buffer in own.items():
            if buffer is not None:
                self._buffers[name] = buffer.to(device=self._buffers[name].device)
        return self

    @property
    def fp32_loss_weights(self) -> torch.Tensor | None:
        """``loss_weights`` for the fp32 losses: fp32 even where DeepSpeed's ``data_types.buffer_dtype`` cast it."""
        weights = self.loss_weights
        return None if weights is None else weights.float()

    @abstractmethod
    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler_output: torch.Tensor | None
    ) -> torch.Tensor: ...

    @abstractmethod
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def predict(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What ``predict_step`` returns for a batch: 1-D or 2-D tensors with one entry per output item.

        The prediction writer concatenates each key over all batches (``torch.cat`` along dim 0) and hands
        the result to ``Task.prediction_records``. Sequence tasks return one entry per text (with ``rows``);
        the token task returns one entry per evaluated word (with the word's ``rows`` and ``word_ids``).
        """


class PooledHead(TaskHead):
    """A sequence-level head: one pooled vector per text (``pool``), dropout, a linear layer to the labels.

    Subclasses add the loss and the predictions; ``loss_weights`` is kept as the persistent buffer.
    """

    def __init__(self, hidden_size: int, num_labels: int, options: HeadOptions) -> None:
        super().__init__()
        self.pooling = options.pooling
        self.dropout = nn.Dropout(options.dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        # Persistent: weights computed from the training data ("balanced") travel with the checkpoint.
        self.register_buffer("loss_weights", options.loss_weights)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler_output: torch.Tensor | None
    ) -> torch.Tensor:
        pooled = pool(self.pooling, hidden_states, attention_mask, pooler_output)
        return self.classifier(self.dropout(pooled))


class Evaluator(nn.Module, ABC):
    """Accumulates one split's predictions (torchmetrics states, synchronised across DDP ranks at compute).

    ``detailed`` evaluators (the test split) also compute per-label figures and build a
    ``TestReport`` (its table and the data of its plots).
    """

    def __init__(self, label_names: list[str], prefix: str, detailed: bool) -> None:
        super().__init__()
        self.label_names = list(label_names)
        self.prefix = prefix
        self.detailed = detailed

    @abstractmethod
    def update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], head: TaskHead) -> None: ...

    @abstractmethod
    def compute(self, head: TaskHead) -> dict[str, torch.Tensor]:
        """Metric name (with the prefix) -> value, identical on every rank."""

    @abstractmethod
    def reset(self) -> None: ...

    def adapt_head(self, head: TaskHead) -> None:
        """Called after each validation epoch of ``fit``: tune what the head decides with (default: nothing)."""

    def report(self) -> TestReport | None:
        """The report of the last ``compute`` (called on rank 0 after testing), or None when there is none."""
        return None


class Task(ABC):
    """One kind of classification: its data encoding, head, evaluation and prediction output."""

    name: ClassVar[str]
    monitor: ClassVar[str]  # the validation metric that picks the best checkpoint (higher is better)
    txt_format: ClassVar[str] = "tsv"  # how a ``.txt`` data file is read
    # Columns aligned with the word pieces (padded like input_ids) and their padding value.
    padded_columns: ClassVar[dict[str, int]] = {}
    # Built with (hidden_size, num_labels, HeadOptions) and (label_names, prefix, detailed).
    head_class: ClassVar[type[TaskHead]]
    evaluator_class: ClassVar[type[Evaluator]]
    supports_top_k: ClassVar[bool] = False  # prediction records can list the k most probable labels

    # --- data ----------------------------------------------------------------------------------
    def check_text_columns(self, text_column: TextColumn, text_pair_column: TextColumn | None) -> None:
        """Refuse text column settings this task cannot read, when the data module is built (by default: a column
        listed twice in the columns of one text)."""
        for option, text in (("text_column", text_column), ("text_pair_column", text_pair_column)):
            parts = text_parts(text)
            if len(set(parts)) < len(parts):
                raise InputError(
                    f"data.{option} {parts} names a column more than once; list each column of the text once."
                )

    @abstractmethod
    def columns(self, spec: DataSpec, labelled: bool, available: Sequence[str]) -> list[str]:
        """The columns to keep from a split (``labelled`` is False for the predict split).

        ``available`` lists the source's columns, for tasks that accept alternative inputs; a named column
        that is not available makes the data module raise a ``DataError`` listing the available ones.
        """

    def select_rows(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> tuple[pd.DataFrame, str | None]:
        """Drop rows that carry no usable example; returns the kept rows and a note on what was dropped."""
        return frame, None

    def normalize_labels(
        self, frame: pd.DataFrame, spec: DataSpec, vocabulary: LabelVocabulary | None, where: str
    ) -> tuple[pd.DataFrame, str | None]:
        """``data.normalize_labels``: the rows with each label read as the name it matches but for case and
        surrounding whitespace (``bertcls.data.labels.normalized_labels``), and a note on what was read otherwise."""
        raise InputError(
            f"data.normalize_labels applies to the single_label, pair and multi_label tasks, not to '{self.name}': "
            "leave it unset (false)."
        )

    def label_warnings(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> list[str]:
        """Warnings for the log on the labels of a training split that builds the vocabulary (labels the run would
        train on but probably should not, such as spellings of one label in another case); none by default."""
        return []

    def invalid_rows(
        self, frame: pd.DataFrame, spec: DataSpec, vocabulary: LabelVocabulary | None, labelled: bool
    ) -> list[InvalidRows]:
        """The rows of ``frame`` this task cannot use, one entry per problem (see ``bertcls.data.validation``).

        Runs on the rows ``select_rows`` kept, before anything is tokenized. ``vocabulary`` is None where it is
        still to be built from this split (a training split without given label names); ``labelled`` is False for
        the predict split. The default checks the texts: missing, empty or whitespace-only cells, and cells that are
        not strings (also in each column of a joined text, whose join would hold their Python repr).
        """
        texts = [text for text in spec.texts if set(text_parts(text)) <= set(frame.columns)]
        parts = [part for text in texts if not isinstance(text, str) for part in text]
        invalid = blank_texts(with_texts(frame, texts, spec.text_separator), [text_name(text) for text in texts])
        return invalid + [non_texts(frame[part], part) for part in parts]

    @abstractmethod
    def label_occurrences(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> pd.Series:
        """How many rows (words, for the token task) of a training split carry each label, named after the label
        column (for the checks of ``bertcls.data.split_checks``: one class only, labels that look like free text)."""

    @abstractmethod
    def label_values(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> list[str]:
        """Every distinct label in ``frame`` (the vocabulary of a training split)."""

    def vocabulary(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> LabelVocabulary:
        """The label vocabulary of a training split: its labels, numbers sorted numerically, text alphabetically."""
        return LabelVocabulary.from_labels(pd.Series(self.label_values(frame, spec, where)))

    @abstractmethod
    def encode(
        self,
        frame: pd.DataFrame,
        tokenizer: PreTrainedTokenizerBase,
        spec: DataSpec,
        vocabulary: LabelVocabulary | None,
        where: str,
    ) -> EncodedSplit:
        """Tokenize ``frame`` and encode its labels (none when ``vocabulary`` is None: the predict split)."""

    @abstractmethod
    def label_counts(self, dataset: TokenizedDataset, num_labels: int) -> tuple[np.ndarray, int]:
        """How often each label occurs in a training set, and how many labelled units (texts or words) it has."""

    # --- model ---------------------------------------------------------------------------------
    def build_head(self, hidden_size: int, num_labels: int, options: HeadOptions) -> TaskHead:
        return self.head_class(hidden_size, num_labels, options)

    def balanced_weights(self, counts: np.ndarray, total: int) -> torch.Tensor:
        """Loss weights for ``class_weights: balanced`` from ``label_counts``: inverse label frequency."""
        return inverse_frequency(counts, total)

    def evaluator(self, label_names: list[str], prefix: str, detailed: bool) -> Evaluator:
        return self.evaluator_class(label_names, prefix, detailed)

    @abstractmethod
    def prediction_records(
        self, outputs: dict[str, torch.Tensor], label_names: list[str], dataset: TokenizedDataset, top_k: int = 1
    ) -> Iterator[dict[str, Any]]:
        """One JSON-ready record per source row, in row order, from the concatenated ``predict`` outputs.

        Every record starts with ``row``. ``top_k`` > 1 (only where ``supports_top_k``) adds the k most
        probable labels. Under DDP each rank makes the records of its own outputs; see ``merged_records``.
        """

    def merged_records(
        self, parts: Iterator[list[dict[str, Any]]], label_names: list[str], dataset: TokenizedDataset
    ) -> Iterator[dict[str, Any]]:
        """The final records from the DDP ranks' records, grouped by row (``parts``: each row's records).

        A task whose rows are one example each gets one record per row: it is final. A task that splits a row
        into several examples (the token task's windows) may get a row's partial records from several ranks.
        """
        for records in parts:
            if len(records) != 1:
                raise RuntimeError(f"row {records[0]['row']} was predicted by {len(records)} processes")
            yield records[0]

    def decision_thresholds(self, head: TaskHead, label_names: list[str]) -> dict[str, float] | None:
        """Per-label thresholds that the predicted labels were chosen with, written beside the predictions."""
        return None


def inverse_frequency(counts: np.ndarray, total: int) -> torch.Tensor:
    """``total / (num_labels * count)``: scikit-learn's "balanced" class weights."""
    counts_tensor = torch.as_tensor(counts, dtype=torch.float).clamp(min=1)
    return total / (len(counts_tensor) * counts_tensor)
