"""Per-class precision, recall and F1 from a confusion matrix, as a scikit-learn-style text and as a table."""

from __future__ import annotations

import numpy as np
import pandas as pd

# The columns of every report table; multi-label tables add ``threshold``. ``kind`` is ``label`` for the rows
# of one class, label or entity type, and ``average`` for the overall rows of the text report.
TABLE_COLUMNS = ["name", "kind", "precision", "recall", "f1", "support"]


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (rows: true, columns: predicted)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positives = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros_like(true_positives), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def _overall_rows(confusion: np.ndarray) -> list[tuple[str, float, float, float, float]]:
    """(name, precision, recall, f1, support) of accuracy, macro and weighted average (accuracy in the f1 column)."""
    scores = per_class_scores(confusion)
    support = scores["support"]
    total = support.sum()
    accuracy = np.trace(confusion) / total if total else 0.0
    rows = [("accuracy", np.nan, np.nan, float(accuracy), total)]
    for name, weights in (("macro avg", np.ones_like(support)), ("weighted avg", support)):
        share = weights / weights.sum() if weights.sum() else np.zeros_like(weights)
        p, r, f = (float(scores[key] @ share) for key in ("precision", "recall", "f1"))
        rows.append((name, p, r, f, total))
    return rows


def classification_report(confusion: np.ndarray, label_names: list[str], digits: int = 4) -> str:
    """A table like scikit-learn's ``classification_report``: per class, then accuracy, macro and weighted."""
    scores = per_class_scores(confusion)
    support = scores["support"]
    width = max(len("weighted avg"), *(len(name) for name in label_names))
    header = f"{'':>{width}} {'precision':>10} {'recall':>10} {'f1-score':>10} {'support':>10}"
    lines = [header, ""]

    def row(name: str, p: float, r: float, f: float, n: float) -> str:
        return f"{name:>{width}} {p:>10.{digits}f} {r:>10.{digits}f} {f:>10.{digits}f} {int(n):>10d}"

    for index, name in enumerate(label_names):
        lines.append(
            row(name, scores["precision"][index], scores["recall"][index], scores["f1"][index], support[index])
        )
    (_, _, _, accuracy, total), *averages = _overall_rows(confusion)
    lines += ["", f"{'accuracy':>{width}} {'':>10} {'':>10} {accuracy:>10.{digits}f} {int(total):>10d}"]
    lines += [row(*average) for average in averages]
    return "\n".join(lines)


def classification_table(confusion: np.ndarray, label_names: list[str]) -> pd.DataFrame:
    """``classification_report`` as data: one ``label`` row per class, then the ``average`` rows (accuracy, macro
    avg, weighted avg; accuracy's value is in the ``f1`` column, as in the text)."""
    scores = per_class_scores(confusion)
    rows = [
        (name, "label", *(float(scores[key][index]) for key in ("precision", "recall", "f1")), scores["support"][index])
        for index, name in enumerate(label_names)
    ]
    rows += [(name, "average", p, r, f, n) for name, p, r, f, n in _overall_rows(confusion)]
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return table.astype({"support": np.int64})
