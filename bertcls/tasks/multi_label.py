"""Multi-label classification (``multi_label``): any number of labels per text, e.g. GoEmotions' emotions.

Labels come as a list per row (JSON Lines or Parquet lists, a hub ``Sequence``), as one delimited string
("2,17,25"), or as one 0/1 column per label (``label_columns``). An empty or missing label cell is a valid
example with no labels. Each label is decided on its own: sigmoid probability >= the label's threshold.
The thresholds live in the head (saved in checkpoints); with ``tune_thresholds`` they are set after each
validation epoch of ``fit`` to the values that maximise each label's F1 on the validation split.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MultilabelPrecisionRecallCurve
from torchmetrics.functional.classification import multilabel_average_precision
from torchmetrics.utilities import dim_zero_cat
from transformers import PreTrainedTokenizerBase

from bertcls.data.dataset import TokenizedDataset
from bertcls.data.encoding import EncodedSplit, encode_texts
from bertcls.data.labels import LabelVocabulary, normalized_labels, renamed_note, row_list
from bertcls.data.sources import ROW_COLUMN
from bertcls.data.texts import text_parts
from bertcls.data.validation import InvalidRows, spelling_note, unknown_labels
from bertcls.errors import DataError, InputError
from bertcls.reporting.report import PrecisionRecallCurve, TestReport
from bertcls.reporting.tables import TABLE_COLUMNS
from bertcls.tasks.base import DataSpec, Evaluator, HeadOptions, PooledHead, Task, TaskHead

# ``balanced`` positive-class weights (negatives / positives per label) are clamped to this range: rare labels
# get at most 100x the weight of their negatives, and frequent labels (more positives than negatives) are never
# down-weighted below 1.
POS_WEIGHT_RANGE = (1.0, 100.0)
BINARY_VALUES = {"0": 0, "1": 1, "false": 0, "true": 1}
COMMON_DELIMITERS = (",", ";", "|")  # what joins several labels in one cell, when data.label_delimiter does not
# Test report: precision-recall curves at evenly spaced thresholds 0, 0.01, ..., 1 (binned, like torchmetrics'
# ``thresholds=101``), fed in chunks of at most this many score-threshold comparisons.
PR_CURVE_THRESHOLDS = 101
PR_CURVE_CHUNK = 1 << 21


# --- labels ------------------------------------------------------------------------------------------
def label_string(value: Any) -> str:
    """A label value as text: strings stripped, integral floats (3.0, from a column with gaps) as integers."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def row_labels(cell: Any, delimiter: str) -> list[str]:
    """The labels of one cell: a list/array of labels, a delimited string, a single value, or none (empty/missing)."""
    if isinstance(cell, str):
        return [piece.strip() for piece in cell.split(delimiter) if piece.strip()]
    if isinstance(cell, list | tuple | np.ndarray):
        return [label_string(value) for value in cell]
    if pd.isna(cell):
        return []
    return [label_string(cell)]


def listed_labels(frame: pd.DataFrame, spec: DataSpec) -> tuple[np.ndarray, pd.Series]:
    """Every label of ``spec.label_column`` (lists or delimited strings) as one flat Series, with its row's position."""
    per_row = [row_labels(cell, spec.label_delimiter) for cell in frame[spec.label_column]]
    positions = np.repeat(np.arange(len(frame)), [len(labels) for labels in per_row])
    return positions, pd.Series([label for labels in per_row for label in labels], dtype=object)


def other_delimiter(cells: pd.Series, delimiter: str, column: str) -> list[InvalidRows]:
    """The rows whose labels are joined by a common delimiter where ``delimiter`` occurs in no cell ("joy;love" with
    data.label_delimiter ","): each such string would be one label of its own."""

    def holding(separator: str) -> np.ndarray:
        return cells.map(lambda cell: isinstance(cell, str) and separator in cell).to_numpy(dtype=bool)

    if holding(delimiter).any():
        return []
    for other in COMMON_DELIMITERS:
        if other != delimiter and (joined := holding(other)).any():
            problem = (
                f"labels joined by '{other}', while data.label_delimiter '{delimiter}' occurs in no row, in column "
                f"'{column}'"
            )
            fix = (
                f"set data.label_delimiter: '{other}'; or, to keep labels holding '{other}' whole, list every label in "
                "model.label_names"
            )
            return [InvalidRows(problem, joined, fix)]
    return []


def labels_from_lists(frame: pd.DataFrame, spec: DataSpec, vocabulary: LabelVocabulary, where: str) -> np.ndarray:
    """Multi-hot rows from ``spec.label_column`` (lists or delimited strings); unknown labels raise a ``DataError``."""
    positions, labels = listed_labels(frame, spec)
    rows = pd.Series(frame[ROW_COLUMN].to_numpy()[positions])
    ids = vocabulary.lookup(labels, rows, f"{where}: column '{spec.label_column}'", spec.labels_are_indices)
    multi_hot = np.zeros((len(frame), len(vocabulary)), dtype=np.uint8)
    multi_hot[positions, ids] = 1
    return multi_hot


def binary_values(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """One label's 0/1 column as numbers, and where it holds anything but 0/1 or true/false (missing values too)."""
    if pd.api.types.is_numeric_dtype(values):  # integers, floats and booleans
        numbers = values.astype(float)
        return numbers, ~numbers.isin([0.0, 1.0])
    numbers = values.map(label_string).str.lower().map(BINARY_VALUES)
    return numbers, numbers.isna()


def binary_column(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """One label's 0/1 column as uint8; anything but 0/1 or true/false (missing values too) raises a ``DataError``."""
    values = frame[column]
    numbers, invalid = binary_values(values)
    if invalid.any():
        raise DataError(
            f"{where}: column '{column}' (one of data.label_columns) must hold 0/1 or true/false, but has "
            f"{shown_values(values[invalid])} at {row_list(frame.loc[invalid, ROW_COLUMN])} (rows counted from 1, "
            "header excluded). Fix those rows."
        )
    return numbers.to_numpy(dtype=np.uint8)


def shown_values(values: pd.Series) -> list[str]:
    """The first few distinct values of a 0/1 column that are not 0/1, for messages."""
    return sorted({"(empty)" if pd.isna(value) else label_string(value) for value in values})[:5]


def labels_from_columns(
    frame: pd.DataFrame, columns: Sequence[str], vocabulary: LabelVocabulary, where: str
) -> np.ndarray:
    """Multi-hot rows from one 0/1 column per label, placed at each column's position in the vocabulary."""
    if sorted(columns) != sorted(vocabulary.names):
        raise DataError(
            f"{where}: data.label_columns {list(columns)} are not the model's labels {list(vocabulary.names)}. "
            "Give one column per label, named like the labels."
        )
    multi_hot = np.zeros((len(frame), len(vocabulary)), dtype=np.uint8)
    for column in columns:
        multi_hot[:, vocabulary.names.index(column)] = binary_column(frame, column, where)
    return multi_hot


# --- head --------------------------------------------------------------------------------------------
class MultiLabelHead(PooledHead):
    """Pooling, dropout, linear; binary cross-entropy per label, with optional positive-class weights (``pos_weight``).

    Two persistent buffers travel with the checkpoint: ``loss_weights`` (when given) and ``thresholds``, one
    decision threshold per label, initialised to the global ``threshold`` and tuned on validation data.
    """

    def __init__(self, hidden_size: int, num_labels: int, options: HeadOptions) -> None:
        if not 0 < options.threshold < 1:
            raise InputError(
                f"model.threshold must be between 0 and 1 (exclusive) for task multi_label, got {options.threshold}; "
                "e.g. --model.threshold 0.5."
            )
        if options.label_smoothing:
            raise InputError(
                "model.label_smoothing applies to the cross-entropy tasks (single_label, pair, token), not to "
                "multi_label: set it to 0 (the default)."
            )
        super().__init__(hidden_size, num_labels, options)
        self.register_buffer("thresholds", torch.full((num_labels,), float(options.threshold)))
        self.threshold = float(options.threshold)
        self.tune_thresholds = options.tune_thresholds

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(
            logits.float(), labels.float(), pos_weight=self.fp32_loss_weights
        )

    def predict(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        probabilities = logits.float().sigmoid()
        return {"rows": batch["rows"], "probabilities": probabilities, "predicted": probabilities >= self.thresholds}


# --- evaluation --------------------------------------------------------------------------------------
class ScoresAndTargets(Metric):
    """Every example's label probabilities and gold labels; ``compute`` concatenates them over batches and ranks."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        self.scores.append(scores)
        self.targets.append(targets.to(torch.uint8))

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return dim_zero_cat(self.scores), dim_zero_cat(self.targets).bool()


def best_thresholds(scores: torch.Tensor, targets: torch.Tensor, default: float) -> torch.Tensor:
    """Per label, the threshold (predict ``score >= threshold``) that maximises F1 on ``scores``/``targets``.

    Every distinct score is a candidate cut; the threshold is placed halfway between the lowest score kept
    and the next lower one (or on the lowest kept score where float rounding leaves no room). Ties in F1 go
    to the highest threshold; labels without positives keep ``default``.
    """
    count = scores.shape[0]
    sorted_scores, order = scores.sort(dim=0, descending=True, stable=True)
    true_positives = targets.gather(0, order).double().cumsum(dim=0)
    positives = true_positives[-1]
    predicted = torch.arange(1, count + 1, device=scores.device, dtype=torch.double).unsqueeze(1)
    f1 = 2 * true_positives / (predicted + positives)
    cut = torch.ones_like(sorted_scores, dtype=torch.bool)
    cut[:-1] = sorted_scores[:-1] != sorted_scores[1:]  # cut only below the last of equal scores
    best = f1.masked_fill(~cut, -1.0).argmax(dim=0, keepdim=True)
    lowest_kept = sorted_scores.gather(0, best)[0]
    next_lower = sorted_scores.gather(0, (best + 1).clamp(max=count - 1))[0]
    midpoint = (lowest_kept + next_lower) / 2
    threshold = torch.where(midpoint > next_lower, midpoint, lowest_kept)
    return torch.where(positives > 0, threshold, torch.full_like(threshold, default))


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator``, 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.zeros_like(numerator))


def _precision_recall_f1(
    true_positives: torch.Tensor, false_positives: torch.Tensor, false_negatives: torch.Tensor
) -> dict[str, torch.Tensor]:
    return {
        "precision": _ratio(true_positives, true_positives + false_positives),
        "recall": _ratio(true_positives, true_positives + false_negatives),
        "f1": _ratio(2 * true_positives, 2 * true_positives + false_positives + false_negatives),
    }


def decision_scores(predicted: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-label ``precision``, ``recall``, ``f1`` and ``support``, and their ``micro_*`` and ``macro_*`` averages.

    Micro pools the counts of all labels; macro is the unweighted mean over labels (0 for a label that is
    neither present nor predicted, as scikit-learn with ``zero_division=0``).
    """
    counts = ((predicted & targets).sum(dim=0), (predicted & ~targets).sum(dim=0), (~predicted & targets).sum(dim=0))
    per_label = _precision_recall_f1(*counts)
    micro = _precision_recall_f1(*(count.sum() for count in counts))
    return (
        per_label
        | {"support": targets.sum(dim=0)}
        | {f"micro_{name}": value for name, value in micro.items()}
        | {f"macro_{name}": value.mean() for name, value in per_label.items()}
    )


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Macro average precision over the labels with at least one positive (for the others it is undefined)."""
    present = targets.any(dim=0)
    if not present.any():
        return torch.tensor(float("nan"), device=scores.device)
    return multilabel_average_precision(
        scores[:, present], targets[:, present].long(), num_labels=int(present.sum()), average="macro"
    )


class MultiLabelEvaluator(Evaluator):
    """F1 at the head's thresholds and at the global threshold, and threshold-free mean average precision.

    Keys (after the prefix): ``micro_f1``, ``macro_f1`` (head thresholds), ``micro_f1@T``, ``macro_f1@T`` (the
    global threshold T, e.g. ``@0.5``) and ``mAP``; detailed evaluators add ``precision/<label>``,
    ``recall/<label>`` and ``f1/<label>`` at the head thresholds, and report a per-label table.
    """

    def __init__(self, label_names: list[str], prefix: str, detailed: bool) -> None:
        super().__init__(label_names, prefix, detailed)
        self.collected = ScoresAndTargets()
        self._last: dict[str, Any] | None = None
        self._curves: dict[str, PrecisionRecallCurve] = {}

    def update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], head: TaskHead) -> None:
        self.collected.update(logits.detach().float().sigmoid(), batch["labels"])

    def adapt_head(self, head: TaskHead) -> None:
        if head.tune_thresholds:
            scores, targets = self.collected.compute()
            head.thresholds.copy_(best_thresholds(scores, targets, head.threshold))

    def compute(self, head: TaskHead) -> dict[str, torch.Tensor]:
        scores, targets = self.collected.compute()
        tuned = decision_scores(scores >= head.thresholds, targets)
        fixed = decision_scores(scores >= head.threshold, targets)
        suffix = f"@{head.threshold:g}"
        values = {
            "micro_f1": tuned["micro_f1"],
            "macro_f1": tuned["macro_f1"],
            f"micro_f1{suffix}": fixed["micro_f1"],
            f"macro_f1{suffix}": fixed["macro_f1"],
            "mAP": mean_average_precision(scores, targets),
        }
        if self.detailed:
            for name in ("precision", "recall", "f1"):
                values |= {f"{name}/{label}": tuned[name][index] for index, label in enumerate(self.label_names)}
            self._last = {
                "tuned": tuned,
                "fixed": fixed,
                "thresholds": head.thresholds.clone(),
                "suffix": suffix,
                "mean_ap": values["mAP"],
            }
            self._curves = precision_recall_curves(scores, targets, self.label_names)
        return {f"{self.prefix}{key}": value.float() for key, value in values.items()}

    def reset(self) -> None:
        self.collected.reset()

    def report(self) -> TestReport | None:
        if self._last is None:
            return None
        note = f"each label at its own threshold; rows marked {self._last['suffix']} at the global threshold"
        f1 = self._last["tuned"]["f1"].tolist()
        return TestReport(
            title=f"Test classification report (multi-label: {note})",
            text=multi_label_report(self.label_names, **self._last),
            table=multi_label_table(self.label_names, **self._last),
            f1=dict(zip(self.label_names, f1, strict=True)),
            f1_of="label",
            pr_curves=self._curves,
        )


def multi_label_report(
    label_names: list[str],
    tuned: dict[str, torch.Tensor],
    fixed: dict[str, torch.Tensor],
    thresholds: torch.Tensor,
    suffix: str,
    mean_ap: torch.Tensor,
    digits: int = 4,
) -> str:
    """Per label: precision, recall, F1, support and threshold; then micro and macro F1 at both settings, and mAP.

    ``tuned`` and ``fixed`` are ``decision_scores`` at the head's thresholds and at the global one (``suffix``).
    """
    width = max(len(f"macro avg {suffix}"), *(len(name) for name in label_names))

    def line(name: str, *cells: float | int | str) -> str:
        shown = (f"{cell:.{digits}f}" if isinstance(cell, float) else str(cell) for cell in cells)
        return f"{name:>{width}} " + " ".join(f"{cell:>10}" for cell in shown)

    lines = [line("", "precision", "recall", "f1-score", "support", "threshold"), ""]
    for index, name in enumerate(label_names):
        p, r, f = (float(tuned[key][index]) for key in ("precision", "recall", "f1"))
        lines.append(line(name, p, r, f, int(tuned["support"][index]), float(thresholds[index])))
    total = int(tuned["support"].sum())
    lines.append("")
    for label, scores in (("", tuned), (f" {suffix}", fixed)):
        for kind in ("micro", "macro"):
            p, r, f = (float(scores[f"{kind}_{key}"]) for key in ("precision", "recall", "f1"))
            lines.append(line(f"{kind} avg{label}", p, r, f, total))
    lines.append(line("mAP", "", "", float(mean_ap), total))
    return "\n".join(lines)


def multi_label_table(
    label_names: list[str],
    tuned: dict[str, torch.Tensor],
    fixed: dict[str, torch.Tensor],
    thresholds: torch.Tensor,
    suffix: str,
    mean_ap: torch.Tensor,
) -> pd.DataFrame:
    """``multi_label_report`` as data: a ``label`` row per label with its threshold, then the ``average`` rows
    (micro and macro avg at the labels' thresholds and at the global one, and mAP in the ``f1`` column)."""
    per_label = {key: tuned[key].double().cpu().numpy() for key in ("precision", "recall", "f1", "support")}
    rows = [
        (name, "label", *(float(per_label[key][index]) for key in ("precision", "recall", "f1")),
         int(per_label["support"][index]), float(thresholds[index]))
        for index, name in enumerate(label_names)
    ]  # fmt: skip
    total = int(tuned["support"].sum())
    for label, scores in (("", tuned), (f" {suffix}", fixed)):
        for kind in ("micro", "macro"):
            p, r, f = (float(scores[f"{kind}_{key}"]) for key in ("precision", "recall", "f1"))
            rows.append((f"{kind} avg{label}", "average", p, r, f, total, np.nan))
    rows.append(("mAP", "average", np.nan, np.nan, float(mean_ap), total, np.nan))
    return pd.DataFrame(rows, columns=[*TABLE_COLUMNS, "threshold"])


def precision_recall_curves(
    scores: torch.Tensor, targets: torch.Tensor, label_names: list[str], thresholds: int = PR_CURVE_THRESHOLDS
) -> dict[str, PrecisionRecallCurve]:
    """The precision-recall curve of each label with positives, at ``thresholds`` evenly spaced cuts in [0, 1].

    torchmetrics' binned curve, fed ``PR_CURVE_CHUNK // thresholds`` scores at a time: its state is a small
    confusion matrix per threshold and label, and no step needs more than a few ``PR_CURVE_CHUNK``-sized tensors.
    Cuts above every score (no predictions, precision undefined) are left out of a curve, and so are repeats of
    the previous point (neighbouring cuts with no score between them).
    """
    num_labels = scores.shape[1]
    # The inputs already hold every rank's examples: no synchronisation at compute.
    curve = MultilabelPrecisionRecallCurve(
        num_labels, thresholds=thresholds, validate_args=False, sync_on_compute=False
    ).to(scores.device)
    rows = max(1, PR_CURVE_CHUNK // (num_labels * thresholds))
    for start in range(0, len(scores), rows):
        curve.update(scores[start : start + rows], targets[start : start + rows].long())
    precision, recall, _ = (values.cpu().numpy() for values in curve.compute())
    present = targets.any(dim=0).tolist()
    curves = {}
    for index, name in enumerate(label_names):
        if present[index]:
            points = np.stack([precision[index], recall[index]])[:, ~np.isnan(precision[index])].astype(np.float64)
            kept = np.ones(points.shape[1], dtype=bool)
            kept[1:] = (points[:, 1:] != points[:, :-1]).any(axis=0)
            curves[name] = PrecisionRecallCurve(precision=points[0, kept], recall=points[1, kept])
    return curves


# --- task --------------------------------------------------------------------------------------------
class MultiLabelTask(Task):
    """Any number of labels per text (or text pair); see the module docstring for the label formats."""

    name = "multi_label"
    monitor = "val/macro_f1"
    head_class = MultiLabelHead
    evaluator_class = MultiLabelEvaluator

    def columns(self, spec: DataSpec, labelled: bool, available: Sequence[str]) -> list[str]:
        texts = [part for text in spec.texts for part in text_parts(text)]
        if not labelled:
            return texts
        return texts + (list(spec.label_columns) if spec.label_columns else [spec.label_column])

    def vocabulary(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> LabelVocabulary:
        """One 0/1 column per label: the columns' order; otherwise the sorted labels, as for every task."""
        if spec.label_columns:
            return LabelVocabulary.from_names(spec.label_columns)
        return super().vocabulary(frame, spec, where)

    def normalize_labels(
        self, frame: pd.DataFrame, spec: DataSpec, vocabulary: LabelVocabulary | None, where: str
    ) -> tuple[pd.DataFrame, str | None]:
        """Listed labels (lists or delimited strings) become lists of normalized labels; 0/1 columns stay."""
        if spec.label_columns:
            return frame, None
        positions, labels = listed_labels(frame, spec)
        normalized = normalized_labels(labels, vocabulary.names if vocabulary else None)
        note = renamed_note(labels, normalized, where)
        if note is None:
            return frame, None
        per_row: list[list[str]] = [[] for _ in range(len(frame))]
        for position, label in zip(positions, normalized, strict=True):
            per_row[position].append(label)
        return frame.assign(**{spec.label_column: pd.Series(per_row, index=frame.index, dtype=object)}), note

    def label_warnings(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> list[str]:
        """Spellings of one listed label that differ in case or surrounding whitespace (0/1 columns have none)."""
        if spec.label_columns:
            return []
        note = spelling_note(listed_labels(frame, spec)[1], where, spec.label_column)
        return [note] if note else []

    def invalid_rows(
        self, frame: pd.DataFrame, spec: DataSpec, vocabulary: LabelVocabulary | None, labelled: bool
    ) -> list[InvalidRows]:
        """Empty texts; for labelled splits also 0/1 columns holding anything else, and listed labels the
        vocabulary lacks (an empty label cell is a valid example without labels); while the training split builds
        the vocabulary, labels joined by another delimiter than ``data.label_delimiter`` where it occurs nowhere."""
        invalid = super().invalid_rows(frame, spec, vocabulary, labelled)
        if not labelled:
            return invalid
        if spec.label_columns:
            for column in spec.label_columns:
                _, bad = binary_values(frame[column])
                problem = f"{shown_values(frame[column][bad])} in column '{column}' (of data.label_columns)"
                invalid.append(InvalidRows(problem, bad.to_numpy(dtype=bool), "use 0/1 or true/false"))
        else:
            positions, labels = listed_labels(frame, spec)
            column = spec.label_column
            if vocabulary is not None:
                invalid.append(
                    unknown_labels(labels, positions, len(frame), vocabulary, spec.labels_are_indices, column)
                )
            else:
                invalid += other_delimiter(frame[column], spec.label_delimiter, column)
        return invalid

    def label_occurrences(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> pd.Series:
        if spec.label_columns:  # the rows holding 1 in each 0/1 column
            ones = {
                column: int((pd.to_numeric(frame[column], errors="coerce") == 1).sum()) for column in spec.label_columns
            }
            counts = pd.Series(ones, dtype=int)
            return counts[counts > 0].rename(", ".join(spec.label_columns))
        return listed_labels(frame, spec)[1].astype(str).value_counts().rename(spec.label_column)

    def label_values(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> list[str]:
        if spec.label_columns:
            return list(spec.label_columns)
        cells = frame[spec.label_column]
        values = list(dict.fromkeys(label for cell in cells for label in row_labels(cell, spec.label_delimiter)))
        if not values:
            raise DataError(
                f"{where}: column '{spec.label_column}' holds no labels at all. Check data.label_column, or use "
                "data.label_columns for one 0/1 column per label."
            )
        return values

    def encode(
        self,
        frame: pd.DataFrame,
        tokenizer: PreTrainedTokenizerBase,
        spec: DataSpec,
        vocabulary: LabelVocabulary | None,
        where: str,
    ) -> EncodedSplit:
        labels, notes = None, []
        if vocabulary is not None:
            multi_hot = (
                labels_from_columns(frame, spec.label_columns, vocabulary, where)
                if spec.label_columns
                else labels_from_lists(frame, spec, vocabulary, where)
            )
            labels = list(multi_hot)
            if unlabelled := int((multi_hot.sum(axis=1) == 0).sum()):
                notes.append(f"{where}: {unlabelled} of {len(frame)} rows have no labels (all-negative examples).")
        texts = (spec.text_column, spec.text_pair_column)
        encoded = encode_texts(frame, tokenizer, *texts, spec.max_length, labels, where, spec.text_separator)
        return EncodedSplit(encoded.table, encoded.meta | {"notes": notes})

    def label_counts(self, dataset: TokenizedDataset, num_labels: int) -> tuple[np.ndarray, int]:
        """Positive examples per label, and the number of examples."""
        _, values = dataset.lists["labels"]
        return values.reshape(len(dataset), num_labels).sum(axis=0, dtype=np.int64), len(dataset)

    def balanced_weights(self, counts: np.ndarray, total: int) -> torch.Tensor:
        """Positive-class weights: negatives / positives per label, clamped to ``POS_WEIGHT_RANGE``."""
        positives = torch.as_tensor(counts, dtype=torch.float)
        return ((total - positives) / positives.clamp(min=1)).clamp(*POS_WEIGHT_RANGE)

    def prediction_records(
        self, outputs: dict[str, torch.Tensor], label_names: list[str], dataset: TokenizedDataset, top_k: int = 1
    ) -> Iterator[dict[str, Any]]:
        """``row``, the ``labels`` at or above their thresholds, and every label's probability."""
        rows, probabilities, predicted = outputs["rows"], outputs["probabilities"], outputs["predicted"]
        for index in rows.argsort().tolist():
            chosen = predicted[index].tolist()
            scores = (round(score, 6) for score in probabilities[index].tolist())
            yield {
                "row": int(rows[index]),
                "labels": [name for name, on in zip(label_names, chosen, strict=True) if on],
                "probabilities": dict(zip(label_names, scores, strict=True)),
            }

    def decision_thresholds(self, head: TaskHead, label_names: list[str]) -> dict[str, float] | None:
        return dict(zip(label_names, head.thresholds.tolist(), strict=True))
