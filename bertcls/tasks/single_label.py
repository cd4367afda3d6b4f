"""Single-label classification of a text (``single_label``) or of a text pair (``pair``: NLI, paraphrase)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from torchmetrics.wrappers import ClasswiseWrapper
from transformers import PreTrainedTokenizerBase

from bertcls.data.dataset import TokenizedDataset
from bertcls.data.encoding import EncodedSplit, encode_texts
from bertcls.data.labels import (
    MAX_ROWS_SHOWN,
    LabelVocabulary,
    as_label_strings,
    label_kind,
    normalized_labels,
    odd_label_types,
    renamed_note,
)
from bertcls.data.texts import TextColumn, text_parts
from bertcls.data.validation import InvalidRows, rows_with, spelling_note, type_name, unknown_labels
from bertcls.errors import DataError
from bertcls.reporting.report import TestReport
from bertcls.reporting.tables import classification_report, classification_table
from bertcls.tasks.base import DataSpec, Evaluator, HeadOptions, PooledHead, Task, TaskHead


class SingleLabelHead(PooledHead):
    """One label per text: pooling, dropout, linear, cross-entropy (optional class weights, label smoothing)."""

    def __init__(self, hidden_size: int, num_labels: int, options: HeadOptions) -> None:
        super().__init__(hidden_size, num_labels, options)
        self.label_smoothing = options.label_smoothing

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(
            logits.float(), labels, weight=self.fp32_loss_weights, label_smoothing=self.label_smoothing
        )

    def predict(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"rows": batch["rows"], "probabilities": logits.float().softmax(dim=-1)}


class SingleLabelEvaluator(Evaluator):
    """Accuracy and macro-F1; for two labels also the F1 of the positive (second) label, the MRPC convention.

    Detailed: precision, recall and F1 per label, a classification report and the confusion matrix.
    """

    def __init__(self, label_names: list[str], prefix: str, detailed: bool) -> None:
        super().__init__(label_names, prefix, detailed)
        num_labels = len(label_names)
        metrics: dict[str, Any] = {
            "accuracy": MulticlassAccuracy(num_classes=num_labels, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes=num_labels, average="macro"),
        }
        if num_labels == 2:
            metrics["f1_positive"] = BinaryF1Score()
        if detailed:
            per_label = {"precision": MulticlassPrecision, "recall": MulticlassRecall, "f1": MulticlassF1Score}
            for name, metric in per_label.items():
                metrics[f"{name}_per_label"] = ClasswiseWrapper(
                    metric(num_classes=num_labels, average=None), labels=self.label_names, prefix=f"{name}/"
                )
        self.metrics = MetricCollection(metrics, prefix=prefix, compute_groups=False)
        self.confusion = MulticlassConfusionMatrix(num_classes=num_labels) if detailed else None
        self._last_confusion: np.ndarray | None = None

    def update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], head: TaskHead) -> None:
        labels = batch["labels"]
        predicted = logits.argmax(dim=-1)
        for name, metric in self.metrics.items(keep_base=True):
            metric.update(predicted if name.endswith("f1_positive") else logits, labels)
        if self.confusion is not None:
            self.confusion.update(logits, labels)

    def compute(self, head: TaskHead) -> dict[str, torch.Tensor]:
        values = self.metrics.compute()
        if self.confusion is not None:
            self._last_confusion = self.confusion.compute().cpu().numpy()
        return values

    def reset(self) -> None:
        self.metrics.reset()
        if self.confusion is not None:
            self.confusion.reset()

    def report(self) -> TestReport | None:
        if self._last_confusion is None:
            return None
        confusion = self._last_confusion
        return TestReport(
            title="Test classification report",
            text=classification_report(confusion, self.label_names),
            table=classification_table(confusion, self.label_names),
            label_names=list(self.label_names),
            confusion=confusion,
        )


def single_values(values: pd.Series) -> np.ndarray:
    """Which cells of a label column hold one value (not missing, not a JSON list or object)."""
    return (values.notna() & values.map(pd.api.types.is_scalar)).to_numpy(dtype=bool)


class SingleLabelTask(Task):
    """One label per row, from ``label_column``; a text, or a text pair when ``text_pair_column`` is set."""

    name = "single_label"
    monitor = "val/accuracy"
    head_class = SingleLabelHead
    evaluator_class = SingleLabelEvaluator
    supports_top_k = True

    def text_pair_column(self, spec: DataSpec) -> TextColumn | None:
        return spec.text_pair_column

    def columns(self, spec: DataSpec, labelled: bool, available: Sequence[str]) -> list[str]:
        texts = text_parts(spec.text_column) + text_parts(self.text_pair_column(spec))
        return texts + ([spec.label_column] if labelled else [])

    def select_rows(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> tuple[pd.DataFrame, str | None]:
        if not spec.drop_labels:
            return frame, None
        labels = frame[spec.label_column]
        unlabelled = labels.notna() & labels.astype(str).isin(spec.drop_labels)
        if not unlabelled.any():
            return frame, None
        note = (
            f"{where}: dropped {int(unlabelled.sum())} of {len(frame)} rows without a gold label "
            f"({spec.label_column} in {list(spec.drop_labels)}; see data.drop_labels)."
        )
        return frame[~unlabelled].reset_index(drop=True), note

    def normalize_labels(
        self, frame: pd.DataFrame, spec: DataSpec, vocabulary: LabelVocabulary | None, where: str
    ) -> tuple[pd.DataFrame, str | None]:
        values = frame[spec.label_column]
        usable = single_values(values)
        labels = as_label_strings(values[usable])
        normalized = normalized_labels(labels, vocabulary.names if vocabulary else None)
        note = renamed_note(labels, normalized, where)
        if note is None:
            return frame, None
        column = values.astype(object)
        column[usable] = normalized.to_numpy()
        return frame.assign(**{spec.label_column: column}), note

    def label_warnings(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> list[str]:
        """Spellings of one label that differ in case or surrounding whitespace."""
        values = frame[spec.label_column]
        note = spelling_note(as_label_strings(values[single_values(values)]), where, spec.label_column)
        return [note] if note else []

    def invalid_rows(
        self, frame: pd.DataFrame, spec: DataSpec, vocabulary: LabelVocabulary | None, labelled: bool
    ) -> list[InvalidRows]:
        """Empty texts; for labelled splits also missing labels, lists or objects as labels (JSON), and labels the
        vocabulary lacks (or, while the training split builds it, labels of the rarer kind where names and whole
        numbers are mixed)."""
        invalid = super().invalid_rows(frame, spec, vocabulary, labelled)
        if not labelled:
            return invalid
        column = spec.label_column
        values = frame[column]
        present = values.notna().to_numpy()
        invalid.append(InvalidRows(f"missing label in column '{column}'", ~present, "fill in the labels"))
        structured = values.map(lambda value: not pd.api.types.is_scalar(value)).to_numpy(dtype=bool)
        kinds = " or ".join(sorted({type_name(value) for value in values[structured]}))
        fix = "give one label per row, a string or a number (several labels per row are data.task: multi_label)"
        invalid.append(InvalidRows(f"a label that is {kinds}, not one value, in column '{column}'", structured, fix))
        present = present & ~structured  # to_numpy() is read-only under pandas' copy-on-write
        labels = as_label_strings(frame.loc[present, column]).reset_index(drop=True)
        positions = np.flatnonzero(present)
        if vocabulary is not None:
            invalid.append(unknown_labels(labels, positions, len(frame), vocabulary, spec.labels_are_indices, column))
            return invalid
        odd = odd_label_types(labels)
        shown = sorted(labels[odd].unique().tolist())[:MAX_ROWS_SHOWN]
        mix = f"{label_kind(labels[odd])} among {label_kind(labels[~odd])}"
        problem = f"label(s) {shown} of another kind than the rest in column '{column}' ({mix})"
        fix = (
            "use one kind of label throughout (a stray value often means a shifted column or a wrong separator), or "
            "list every label in model.label_names to keep such a mix"
        )
        invalid.append(InvalidRows(problem, rows_with(odd, positions, len(frame)), fix))
        return invalid

    def label_occurrences(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> pd.Series:
        return as_label_strings(frame[spec.label_column]).value_counts().rename(spec.label_column)

    def label_values(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> list[str]:
        return as_label_strings(frame[spec.label_column]).unique().tolist()

    def encode(
        self,
        frame: pd.DataFrame,
        tokenizer: PreTrainedTokenizerBase,
        spec: DataSpec,
        vocabulary: LabelVocabulary | None,
        where: str,
    ) -> EncodedSplit:
        labels = None
        if vocabulary is not None:
            labels = vocabulary.encode(frame, spec.label_column, where, spec.labels_are_indices).tolist()
        texts = (spec.text_column, self.text_pair_column(spec))
        return encode_texts(frame, tokenizer, *texts, spec.max_length, labels, where, spec.text_separator)

    def label_counts(self, dataset: TokenizedDataset, num_labels: int) -> tuple[np.ndarray, int]:
        return np.bincount(dataset.scalars["labels"], minlength=num_labels), len(dataset)

    def prediction_records(
        self, outputs: dict[str, torch.Tensor], label_names: list[str], dataset: TokenizedDataset, top_k: int = 1
    ) -> Iterator[dict[str, Any]]:
        """``row``, the most probable ``label`` and its ``score``, for ``top_k`` > 1 the ``top_k`` most probable
        labels (``[{"label", "score"}, ...]``, best first; ties in label order), and every label's probability."""
        rows, probabilities = outputs["rows"], outputs["probabilities"]
        count = min(top_k, len(label_names))
        for index in rows.argsort().tolist():
            exact = probabilities[index].tolist()
            # A stable sort: equal probabilities keep label order, as argmax does.
            ranked = sorted(range(len(exact)), key=exact.__getitem__, reverse=True)[:count]
            scores = [round(score, 6) for score in exact]
            record: dict[str, Any] = {
                "row": int(rows[index]),
                "label": label_names[ranked[0]],
                "score": scores[ranked[0]],
            }
            if top_k > 1:
                record["top_k"] = [{"label": label_names[label], "score": scores[label]} for label in ranked]
            record["probabilities"] = dict(zip(label_names, scores, strict=True))
            yield record


class SentencePairTask(SingleLabelTask):
    """Single-label classification of a text pair (NLI, paraphrase): ``[CLS] a [SEP] b [SEP]``."""

    name = "pair"

    def text_pair_column(self, spec: DataSpec) -> TextColumn | None:
        if not spec.text_pair_column:
            raise DataError(
                "task 'pair' reads two text columns: set data.text_column and data.text_pair_column "
                "(e.g. sentence1 and sentence2)."
            )
        return spec.text_pair_column
