"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, no GUI, no global figure registry).

Each ``*_figure`` function returns a new ``Figure``; ``save_figure`` writes it as a PNG and ``close_figure``
releases it. Figures never enter pyplot's list of open figures, so drawing many does not accumulate memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bertcls.reporting.report import PrecisionRecallCurve

DPI = 120


def new_figure(width: float, height: float, **kwargs) -> Figure:
    figure = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    return figure


def save_figure(figure: Figure, path: Path, dpi: int = DPI) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, format="png")
    return path


def close_figure(figure: Figure) -> None:
    """Release a figure's artists (and, should pyplot know the figure after all, pyplot's reference)."""
    import matplotlib.pyplot as plt  # only its registry; the Agg canvas above needs no backend switch

    plt.close(figure)
    figure.clear()


def confusion_matrix_figure(confusion: np.ndarray, label_names: list[str]) -> Figure:
    """The confusion matrix: counts written in the cells, colour by the share of the true class (row)."""
    confusion = np.asarray(confusion)
    size = max(4.0, 0.5 * len(label_names) + 2)
    figure = new_figure(size, size)
    axes = figure.subplots()
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
    return figure


def save_confusion_matrix(confusion: np.ndarray, label_names: list[str], path: Path) -> Path:
    """Draw the confusion matrix (counts, rows normalised for colour) into a PNG file."""
    figure = confusion_matrix_figure(confusion, label_names)
    try:
        return save_figure(figure, path)
    finally:
        close_figure(figure)


def f1_bar_figure(f1: Mapping[str, float], of: str = "label") -> Figure:
    """A horizontal bar per label (or entity type), in the given order from the top, with its F1 written beside."""
    names, values = list(f1), np.asarray(list(f1.values()), dtype=float)
    figure = new_figure(6.0, max(2.5, 0.28 * len(names) + 1.2))
    axes = figure.subplots()
    positions = np.arange(len(names))
    axes.barh(positions, values, color="tab:blue")
    axes.set_yticks(positions, names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 1.1)
    axes.set_xlabel("F1")
    for position, value in zip(positions, values, strict=True):
        axes.text(value + 0.01, position, f"{value:.3f}", va="center", fontsize=7)
    axes.set_title(f"F1 per {'entity type' if of == 'type' else of} (test)")
    figure.tight_layout()
    return figure


def pr_curves_figure(curves: Mapping[str, PrecisionRecallCurve]) -> Figure:
    """Precision over recall, one line per label; the legend sits to the right of the axes."""
    columns = 1 if len(curves) <= 20 else 2
    figure = new_figure(7.0 + 1.6 * columns, 5.0, layout="constrained")
    axes = figure.subplots()
    colours = [f"C{index}" for index in range(10)]
    styles = ["-", "--", ":", "-."]
    for index, (name, curve) in enumerate(curves.items()):
        style = styles[(index // len(colours)) % len(styles)]
        axes.plot(curve.recall, curve.precision, style, color=colours[index % len(colours)], lw=1.2, label=name)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.grid(alpha=0.3)
    axes.set_title("Precision-recall curves (test)")
    if curves:
        figure.legend(loc="outside right upper", fontsize=7, ncols=columns)
    return figure
