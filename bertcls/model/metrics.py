"""Metric collections (torchmetrics: synchronised across DDP ranks at compute time)."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


def single_label_metrics(num_labels: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes=num_labels, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes=num_labels, average="macro"),
        },
        prefix=prefix,
    )
