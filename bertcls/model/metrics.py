"""Metric collections (torchmetrics: synchronised across DDP ranks at compute time)."""

from __future__ import annotations

from collections.abc import Sequence

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall
from torchmetrics.wrappers import ClasswiseWrapper


def single_label_metrics(num_labels: int, prefix: str, label_names: Sequence[str] | None = None) -> MetricCollection:
    """Accuracy and macro-F1; with ``label_names``, also ``<prefix>{precision,recall,f1}/<label>`` per class."""
    metrics = {
        "accuracy": MulticlassAccuracy(num_classes=num_labels, average="micro"),
        "macro_f1": MulticlassF1Score(num_classes=num_labels, average="macro"),
    }
    if label_names is not None:
        per_class = {"precision": MulticlassPrecision, "recall": MulticlassRecall, "f1": MulticlassF1Score}
        for name, metric in per_class.items():
            metrics[f"{name}_per_class"] = ClasswiseWrapper(
                metric(num_classes=num_labels, average=None), labels=list(label_names), prefix=f"{name}/"
            )
    return MetricCollection(metrics, prefix=prefix)
