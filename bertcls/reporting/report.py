"""``TestReport``: what an evaluator knows after testing, as data (a table and the data of its plots)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """One label's precision-recall curve: points in order of increasing decision threshold."""

    precision: np.ndarray
    recall: np.ndarray


@dataclass
class TestReport:
    """The report of a test run (built by ``Evaluator.report`` on rank 0, published by ``publish_report``).

    Attributes:
        title: one line, e.g. "Test classification report".
        text: the printed table (what ``bertcls test`` shows).
        table: one row per class / label / entity type (``kind == "label"``) and the overall rows of ``text``
            (``kind == "average"``): columns ``name``, ``kind``, ``precision``, ``recall``, ``f1``, ``support``
            (multi-label also ``threshold``). A value the text shows in the f1-score column alone (accuracy,
            mAP) is in ``f1``, with precision and recall missing (NaN).
        label_names: the confusion matrix' classes, in its row/column order.
        confusion: single-label and pair: the confusion-matrix counts (rows: true, columns: predicted).
        f1: multi-label and token: the F1 of each label or entity type, for a bar chart.
        f1_of: what ``f1`` is keyed by: ``label`` or (token task) entity ``type``.
        pr_curves: multi-label: the precision-recall curve of each label that has positives.
    """

    __test__ = False  # not a pytest test class, despite the name

    title: str
    text: str
    table: pd.DataFrame
    label_names: list[str] = field(default_factory=list)
    confusion: np.ndarray | None = None
    f1: dict[str, float] = field(default_factory=dict)
    f1_of: Literal["label", "type"] = "label"
    pr_curves: dict[str, PrecisionRecallCurve] = field(default_factory=dict)
