"""Publish a ``TestReport``: files beside the run's checkpoints, and the same to each experiment logger.

Files (in ``folder``, the run's log folder): ``test_report.txt`` (title and table), ``test_report.csv`` (the
table as data) and one PNG per plot: ``test_confusion_matrix.png`` (single-label, pair), ``test_per_label_f1.png``
and ``test_pr_curves.png`` (multi-label), ``test_per_type_f1.png`` (token).

Loggers: W&B gets one ``log`` call with the table (``test/report``), native charts (``test/confusion_matrix``,
``test/pr_curves``, ``test/per_label_f1`` or ``test/per_type_f1``) and the PNGs (``test/plots/<name>``);
TensorBoard gets each figure (``test/<name>``) and the text (``test/report``); the CSV logger needs nothing more,
the files are in its folder. Call on rank 0 only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure

from bertcls.reporting.figures import (
    close_figure,
    confusion_matrix_figure,
    f1_bar_figure,
    pr_curves_figure,
    save_figure,
)
from bertcls.reporting.report import TestReport

TEXT_FILE = "test_report.txt"
TABLE_FILE = "test_report.csv"


def plot_names(report: TestReport) -> list[str]:
    """The plots a report has, by name (``test_<name>.png``, ``test/plots/<name>``)."""
    names = []
    if report.confusion is not None:
        names.append("confusion_matrix")
    if report.f1:
        names.append(f"per_{report.f1_of}_f1")
    if report.pr_curves:
        names.append("pr_curves")
    return names


def draw(report: TestReport, name: str) -> Figure:
    if name == "confusion_matrix":
        return confusion_matrix_figure(report.confusion, report.label_names)
    if name == "pr_curves":
        return pr_curves_figure(report.pr_curves)
    return f1_bar_figure(report.f1, report.f1_of)


def report_markdown(report: TestReport) -> str:
    """The title and the text as markdown: the table in a code block, so that its columns stay aligned."""
    return f"**{report.title}**\n\n```\n{report.text}\n```"


def publish_report(report: TestReport, folder: Path, loggers: Iterable[Logger], step: int) -> list[Path]:
    """Write the report's files into ``folder`` and log them to each logger; returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text_file, table_file = folder / TEXT_FILE, folder / TABLE_FILE
    text_file.write_text(f"{report.title}\n{report.text}\n", encoding="utf-8")
    report.table.to_csv(table_file, index=False)
    files = [text_file, table_file]

    figures: dict[str, Figure] = {}
    try:
        images: dict[str, Path] = {}
        for name in plot_names(report):
            figures[name] = draw(report, name)
            images[name] = save_figure(figures[name], folder / f"test_{name}.png")
        files += images.values()
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.log(wandb_payload(report, images) | {"trainer/global_step": step})
            elif isinstance(logger, TensorBoardLogger):
                experiment = logger.experiment
                for name, figure in figures.items():
                    experiment.add_figure(f"test/{name}", figure, global_step=step, close=False)
                experiment.add_text("test/report", report_markdown(report), global_step=step)
                experiment.flush()
    finally:
        for figure in figures.values():
            close_figure(figure)
    return files


def wandb_payload(report: TestReport, images: dict[str, Path]) -> dict[str, Any]:
    """What ``publish_report`` logs to W&B in one call: the table, W&B's own charts and the PNGs."""
    import wandb

    payload: dict[str, Any] = {}
    if not report.table.empty:  # missing values (NaN: not valid JSON) as None
        table = report.table.astype(object).where(report.table.notna(), None)
        payload["test/report"] = wandb.Table(dataframe=table)
    if report.confusion is not None:
        y_true, predicted = confusion_pairs(report.confusion)
        payload["test/confusion_matrix"] = wandb.plot.confusion_matrix(
            y_true=y_true, preds=predicted, class_names=report.label_names, title="Confusion matrix (test)"
        )
    if report.f1:
        column = "entity type" if report.f1_of == "type" else "label"
        bars = wandb.Table(dataframe=pd.DataFrame({column: list(report.f1), "f1": list(report.f1.values())}))
        payload[f"test/per_{report.f1_of}_f1"] = wandb.plot.bar(bars, column, "f1", title=f"F1 per {column} (test)")
    if report.pr_curves:
        curves = report.pr_curves
        payload["test/pr_curves"] = wandb.plot.line_series(
            xs=[curve.recall.tolist() for curve in curves.values()],
            ys=[curve.precision.tolist() for curve in curves.values()],
            keys=list(curves),
            title="Precision-recall curves (test)",
            xname="recall",
        )
    for name, path in images.items():
        payload[f"test/plots/{name}"] = wandb.Image(str(path), caption=f"{name.replace('_', ' ')} (test)")
    return payload


def confusion_pairs(confusion: np.ndarray) -> tuple[list[int], list[int]]:
    """(true, predicted) class ids, one pair per counted example, that reproduce the confusion matrix' counts."""
    counts = np.asarray(confusion, dtype=np.int64)
    true, predicted = np.indices(counts.shape)
    return np.repeat(true.ravel(), counts.ravel()).tolist(), np.repeat(predicted.ravel(), counts.ravel()).tolist()
