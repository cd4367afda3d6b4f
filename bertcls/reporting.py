"""Human-readable test reports: a per-class table and a confusion-matrix image."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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


def classification_report(confusion: np.ndarray, label_names: list[str], digits: int = 4) -> str:
    """A table like scikit-learn's ``classification_report``: per class, then accuracy, macro and weighted."""
    scores = per_class_scores(confusion)
    support = scores["support"]
    total = support.sum()
    width = max(len("weighted avg"), *(len(name) for name in label_names))
    header = f"{'':>{width}} {'precision':>10} {'recall':>10} {'f1-score':>10} {'support':>10}"
    lines = [header, ""]

    def row(name: str, p: float, r: float, f: float, n: float) -> str:
        return f"{name:>{width}} {p:>10.{digits}f} {r:>10.{digits}f} {f:>10.{digits}f} {int(n):>10d}"

    for index, name in enumerate(label_names):
        lines.append(
            row(name, scores["precision"][index], scores["recall"][index], scores["f1"][index], support[index])
        )
    accuracy = np.trace(confusion) / total if total else 0.0
    lines += ["", f"{'accuracy':>{width}} {'':>10} {'':>10} {accuracy:>10.{digits}f} {int(total):>10d}"]
    for name, weights in (("macro avg", np.ones_like(support)), ("weighted avg", support)):
        share = weights / weights.sum() if weights.sum() else np.zeros_like(weights)
        p, r, f = (float(scores[key] @ share) for key in ("precision", "recall", "f1"))
        lines.append(row(name, p, r, f, total))
    return "\n".join(lines)


def save_confusion_matrix(confusion: np.ndarray, label_names: list[str], path: Path) -> Path:
    """Draw the confusion matrix (counts, rows normalised for colour) into a PNG file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion)
    size = max(4.0, 0.5 * len(label_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    row_totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, row_totals, out=np.zeros(confusion.shape), where=row_totals > 0)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(label_names))
    axes.set_xticks(ticks, label_names, rotation=45, ha="right")
    axes.set_yticks(ticks, label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (true, predicted), count in np.ndenumerate(confusion):
        colour = "white" if shares[true, predicted] > 0.5 else "black"
        axes.text(predicted, true, str(count), ha="center", va="center", color=colour, fontsize=8)
    axes.set_title("Confusion matrix (test)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
