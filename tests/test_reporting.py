"""Test reports: per-class scores and the scikit-learn-style table, each task's ``TestReport`` (its table and
plot data), and ``publish_report``: the files beside the checkpoints, W&B (offline) and TensorBoard.

The evaluators are fed random predictions directly (no training); one test runs ``bertcls test`` for real.
"""

from __future__ import annotations

import gc
import json
import socket
import time
import weakref
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CONFIGS, run_cli, separable_frame, write_frame
from PIL import Image
from seqeval.metrics import classification_report as seqeval_report
from sklearn.metrics import classification_report as sklearn_report
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, precision_score, recall_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import bertcls.tasks.multi_label as multi_label_module
from bertcls.reporting import (
    PrecisionRecallCurve,
    TestReport,
    classification_report,
    classification_table,
    per_class_scores,
)
from bertcls.reporting import publish as publish_module
from bertcls.reporting.figures import save_confusion_matrix
from bertcls.reporting.publish import plot_names, publish_report
from bertcls.tasks import HeadOptions, get_task

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = ["negative", "neutral", "positive", "never-predicted"]


@pytest.fixture
def predictions() -> tuple[np.ndarray, np.ndarray]:
    """Fixed, imperfect predictions; the last class occurs but is never predicted (zero precision)."""
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, size=300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 3, size=300))
    y_pred[y_pred == 3] = 0
    return y_true, y_pred


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=range(len(LABELS)))


def test_per_class_scores_match_sklearn(predictions) -> None:
    y_true, y_pred = predictions
    scores = per_class_scores(confusion(y_true, y_pred))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=range(len(LABELS)), zero_division=0
    )
    np.testing.assert_allclose(scores["precision"], precision)
    np.testing.assert_allclose(scores["recall"], recall)
    np.testing.assert_allclose(scores["f1"], f1)
    np.testing.assert_array_equal(scores["support"], support)
    assert scores["precision"][3] == 0 and scores["support"][3] > 0


def test_per_class_scores_with_a_class_absent_from_the_data() -> None:
    y_true = np.array([0, 0, 1, 1, 1])
    y_pred = np.array([0, 2, 1, 1, 2])  # class 2 is predicted but never true
    scores = per_class_scores(confusion_matrix(y_true, y_pred, labels=[0, 1, 2]))
    expected = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2], zero_division=0)
    for key, values in zip(("precision", "recall", "f1", "support"), expected, strict=True):
        np.testing.assert_allclose(scores[key], values)


def parse_report(text: str) -> dict[str, list[float]]:
    """Numbers of each row of a text report, keyed by the row name (the label may contain spaces or dashes)."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        numbers = []
        while parts and parts[-1].replace(".", "", 1).isdigit():
            numbers.insert(0, float(parts.pop()))
        if parts and numbers:
            rows[" ".join(parts)] = numbers
    return rows


def test_report_matches_sklearn_classification_report(predictions) -> None:
    y_true, y_pred = predictions
    ours = classification_report(confusion(y_true, y_pred), LABELS, digits=4)
    reference = sklearn_report(
        y_true, y_pred, labels=range(len(LABELS)), target_names=LABELS, digits=4, zero_division=0, output_dict=True
    )
    rows = parse_report(ours)
    assert set(rows) == {*LABELS, "accuracy", "macro avg", "weighted avg"}
    for name in [*LABELS, "macro avg", "weighted avg"]:
        expected = reference[name]
        assert rows[name][:3] == pytest.approx(
            [expected["precision"], expected["recall"], expected["f1-score"]], abs=5e-5
        ), name
        assert rows[name][3] == expected["support"]
    assert rows["accuracy"] == pytest.approx([reference["accuracy"], len(y_true)], abs=5e-5)
    # Row for row, the same rounded numbers as scikit-learn's text report.
    text = sklearn_report(y_true, y_pred, labels=range(len(LABELS)), target_names=LABELS, digits=4, zero_division=0)
    assert parse_report(text) == rows


def test_report_of_a_perfect_binary_classifier() -> None:
    rows = parse_report(classification_report(np.array([[5, 0], [0, 7]]), ["0", "1"]))
    assert rows["accuracy"] == [1.0, 12]
    assert rows["weighted avg"] == [1.0, 1.0, 1.0, 12]


def test_report_of_an_empty_confusion_matrix_does_not_crash() -> None:
    rows = parse_report(classification_report(np.zeros((2, 2), dtype=int), ["a", "b"]))
    assert rows["accuracy"] == [0.0, 0]


def test_confusion_matrix_image_is_a_png(tmp_path: Path, predictions) -> None:
    y_true, y_pred = predictions
    path = save_confusion_matrix(confusion(y_true, y_pred), LABELS, tmp_path / "nested" / "confusion.png")
    assert path == tmp_path / "nested" / "confusion.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    # max(4, 0.5 * 4 labels + 2) = 4 inches at 120 dpi, RGBA.
    assert image.shape == (480, 480, 4)
    assert image[..., :3].std() > 0.05, "the image is not blank"


def test_confusion_matrix_image_grows_with_many_labels(tmp_path: Path) -> None:
    labels = [f"class {index}" for index in range(10)]
    path = save_confusion_matrix(np.eye(10, dtype=int) * 3, labels, tmp_path / "confusion.png")
    assert matplotlib.image.imread(path).shape == (840, 840, 4)  # (0.5 * 10 + 2) inches * 120 dpi


def test_classification_table_holds_the_numbers_of_the_text_report(predictions) -> None:
    y_true, y_pred = predictions
    table = classification_table(confusion(y_true, y_pred), LABELS).set_index("name")
    reference = sklearn_report(
        y_true, y_pred, labels=range(len(LABELS)), target_names=LABELS, zero_division=0, output_dict=True
    )
    assert table.index.tolist() == [*LABELS, "accuracy", "macro avg", "weighted avg"]
    assert table["kind"].tolist() == ["label"] * len(LABELS) + ["average"] * 3
    for name in [*LABELS, "macro avg", "weighted avg"]:
        expected = reference[name]
        assert table.loc[name, ["precision", "recall", "f1"]].tolist() == pytest.approx(
            [expected["precision"], expected["recall"], expected["f1-score"]], abs=1e-12
        )
        assert table.loc[name, "support"] == expected["support"]
    assert table.loc["accuracy", "f1"] == pytest.approx(reference["accuracy"])
    assert table.loc["accuracy", ["precision", "recall"]].isna().all()
    # Rounded, the table is the text report.
    rows = parse_report(classification_report(confusion(y_true, y_pred), LABELS, digits=4))
    for name in LABELS:
        assert rows[name][:3] == pytest.approx(table.loc[name, ["precision", "recall", "f1"]].tolist(), abs=5e-5)


# --- each task's report, from random predictions ---------------------------------------------------------
TAGS = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER", "B-MISC", "I-MISC"]
MULTI_LABEL_RATES = [0.1, 0.3, 0.5, 0.05, 0.2, 0.0]  # the last label never occurs: it has no PR curve


def single_label_case(task_name: str, rows: int = 200, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    gold = torch.randint(0, len(LABELS), (rows,), generator=generator)
    logits = torch.randn(rows, len(LABELS), generator=generator)
    logits[torch.arange(rows), gold] += 1.0  # better than chance
    evaluator = get_task(task_name).evaluator(LABELS, "test/", detailed=True)
    for start in range(0, rows, 64):
        evaluator.update(logits[start : start + 64], {"labels": gold[start : start + 64]}, head=None)
    evaluator.compute(head=None)
    return {"report": evaluator.report(), "gold": gold.numpy(), "predicted": logits.argmax(-1).numpy()}


def multi_label_case(rows: int = 300, seed: int = 0) -> dict:
    generator = np.random.default_rng(seed)
    targets = generator.random((rows, len(MULTI_LABEL_RATES))) < np.array(MULTI_LABEL_RATES)
    logits = torch.tensor(generator.normal(size=targets.shape) + 1.5 * targets, dtype=torch.float)
    names = [f"label {index}" for index in range(len(MULTI_LABEL_RATES))]
    task = get_task("multi_label")
    head = task.build_head(4, len(names), HeadOptions(dropout=0.0))
    head.thresholds.copy_(torch.tensor([0.3, 0.5, 0.7, 0.4, 0.6, 0.5]))
    evaluator = task.evaluator(names, "test/", detailed=True)
    for start in range(0, rows, 64):
        evaluator.update(logits[start : start + 64], {"labels": torch.tensor(targets[start : start + 64])}, head)
    evaluator.compute(head)
    scores = logits.sigmoid().numpy()
    return {"report": evaluator.report(), "names": names, "scores": scores, "gold": targets, "head": head}


def token_case(sentences: int = 40, length: int = 12, seed: int = 0) -> dict:
    """Random BIO tags (MISC in the tag set but never used), and predictions with a fifth of the tags replaced."""
    generator = np.random.default_rng(seed)
    used = len(TAGS) - 2
    gold = generator.choice(used, size=(sentences, length), p=[0.6] + [0.4 / (used - 1)] * (used - 1))
    predicted = np.where(generator.random(gold.shape) < 0.8, gold, generator.integers(0, used, gold.shape))
    task = get_task("token")
    head = task.build_head(8, len(TAGS), HeadOptions(dropout=0.0))
    evaluator = task.evaluator(TAGS, "test/", detailed=True)
    batch = {
        "rows": torch.arange(sentences),
        "word_ids": torch.arange(length).expand(sentences, length),
        "labels": torch.tensor(gold),
    }
    logits = torch.nn.functional.one_hot(torch.tensor(predicted), len(TAGS)).float()
    evaluator.update(logits, batch, head)
    evaluator.compute(head)
    as_tags = np.asarray(TAGS, dtype=object)
    return {"report": evaluator.report(), "gold": as_tags[gold].tolist(), "predicted": as_tags[predicted].tolist()}


CASES = {
    "single_label": lambda: single_label_case("single_label"),
    "pair": lambda: single_label_case("pair", seed=1),
    "multi_label": multi_label_case,
    "token": token_case,
}
PLOTS = {
    "single_label": ["confusion_matrix"],
    "pair": ["confusion_matrix"],
    "multi_label": ["per_label_f1", "pr_curves"],
    "token": ["per_type_f1"],
}


@pytest.mark.parametrize("task_name", ["single_label", "pair"])
def test_single_label_report_holds_sklearns_numbers_and_the_confusion_matrix(task_name: str) -> None:
    case = single_label_case(task_name)
    report: TestReport = case["report"]
    gold, predicted = case["gold"], case["predicted"]
    np.testing.assert_array_equal(report.confusion, confusion_matrix(gold, predicted, labels=range(len(LABELS))))
    assert report.label_names == LABELS
    table = report.table.set_index("name")
    expected = precision_recall_fscore_support(gold, predicted, labels=range(len(LABELS)), zero_division=0)
    for key, values in zip(("precision", "recall", "f1", "support"), expected, strict=True):
        np.testing.assert_allclose(table.loc[LABELS, key].to_numpy(dtype=float), values, atol=1e-12)
    assert table.loc["accuracy", "f1"] == pytest.approx(np.mean(gold == predicted))
    assert report.text == classification_report(report.confusion, LABELS)
    assert report.title == "Test classification report"
    assert plot_names(report) == ["confusion_matrix"] and not report.f1 and not report.pr_curves


def test_multi_label_report_holds_per_label_f1_and_precision_recall_curves(monkeypatch) -> None:
    # Fed to torchmetrics a few rows at a time: the chunks must add up to the whole curve.
    monkeypatch.setattr(multi_label_module, "PR_CURVE_CHUNK", 5 * 6 * 101)
    case = multi_label_case()
    report: TestReport = case["report"]
    names, scores, gold = case["names"], case["scores"], case["gold"]
    decided = scores >= case["head"].thresholds.numpy()
    assert report.f1 == pytest.approx(
        dict(zip(names, f1_score(gold, decided, average=None, zero_division=0), strict=True))
    )
    assert report.f1_of == "label" and report.confusion is None
    table = report.table.set_index("name")
    assert table.loc[names, "threshold"].tolist() == pytest.approx([0.3, 0.5, 0.7, 0.4, 0.6, 0.5])
    assert table.loc[names, "support"].tolist() == gold.sum(axis=0).tolist()
    assert table.loc["mAP", "kind"] == "average" and np.isnan(table.loc["mAP", "threshold"])

    # One curve per label with positives: precision and recall at the cuts 0, 0.01, ..., 1 (where anything is
    # predicted), then torchmetrics' closing point (precision 1, recall 0); a point equal to the one before is left out.
    assert list(report.pr_curves) == names[:-1]
    for index, name in enumerate(names[:-1]):
        points = []
        for cut in np.linspace(0, 1, 101, dtype=np.float32):
            chosen, positive = scores[:, index] >= cut, gold[:, index]
            if chosen.any():
                true_positives = (chosen & positive).sum()
                points.append((true_positives / chosen.sum(), true_positives / positive.sum()))
        points.append((1.0, 0.0))
        expected = np.array([point for before, point in zip([None, *points], points, strict=False) if point != before])
        curve = report.pr_curves[name]
        np.testing.assert_allclose(np.stack([curve.precision, curve.recall], axis=1), expected, atol=1e-6)
    # scikit-learn agrees on a point in the middle.
    cut = np.float32(0.5)
    chosen = scores[:, 2] >= cut
    point = (precision_score(gold[:, 2], chosen), recall_score(gold[:, 2], chosen))
    curve = report.pr_curves[names[2]]
    assert min(abs(curve.precision - point[0]) + abs(curve.recall - point[1])) < 1e-6


def test_token_report_table_is_seqevals_and_f1_covers_every_entity_type() -> None:
    case = token_case()
    report: TestReport = case["report"]
    expected = seqeval_report(case["gold"], case["predicted"], output_dict=True, zero_division=0)
    table = report.table.set_index("name")
    assert table.index.tolist() == list(expected)
    for name, scores in expected.items():
        assert table.loc[name, ["precision", "recall", "f1"]].tolist() == pytest.approx(
            [scores["precision"], scores["recall"], scores["f1-score"]], abs=1e-12
        )
        assert table.loc[name, "support"] == scores["support"]
        assert table.loc[name, "kind"] == ("average" if name.endswith("avg") else "label")
    assert report.text == seqeval_report(case["gold"], case["predicted"], digits=4, zero_division=0)
    assert report.f1_of == "type"
    assert report.f1 == pytest.approx({"LOC": table.loc["LOC", "f1"], "MISC": 0.0, "ORG": table.loc["ORG", "f1"],
                                       "PER": table.loc["PER", "f1"]})  # fmt: skip


def test_token_report_without_entities_has_an_empty_table_and_no_plots(tmp_path: Path) -> None:
    task = get_task("token")
    evaluator = task.evaluator(TAGS, "test/", detailed=True)
    batch = {"rows": torch.arange(2), "word_ids": torch.arange(3).expand(2, 3), "labels": torch.zeros(2, 3).long()}
    evaluator.update(torch.nn.functional.one_hot(torch.zeros(2, 3).long(), len(TAGS)).float(), batch, head=None)
    evaluator.compute(head=None)
    report = evaluator.report()
    assert report.table.empty and "No entities" in report.text and plot_names(report) == []
    files = publish_report(report, tmp_path, [], step=0)
    assert [path.name for path in files] == ["test_report.txt", "test_report.csv"]


def test_a_report_before_any_test_is_none() -> None:
    for task_name in ("single_label", "multi_label"):
        assert get_task(task_name).evaluator(["a", "b"], "test/", detailed=True).report() is None


# --- publishing: files ---------------------------------------------------------------------------------------
def assert_valid_png(path: Path, smallest: int = 200, largest: int = 2500) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert smallest <= width <= largest and smallest <= height <= largest, (path.name, image.size)
    assert pixels.std() > 10, f"{path.name} is blank"
    return width, height


@pytest.mark.parametrize("task_name", list(CASES))
def test_publish_writes_text_table_and_pngs_and_leaves_no_figure_open(
    task_name: str, tmp_path: Path, monkeypatch
) -> None:
    import matplotlib.pyplot as plt

    report: TestReport = CASES[task_name]()["report"]
    drawn = []

    def draw(report: TestReport, name: str):
        figure = original_draw(report, name)
        drawn.append(weakref.ref(figure))
        return figure

    original_draw = publish_module.draw
    monkeypatch.setattr(publish_module, "draw", draw)
    open_before = plt.get_fignums()
    folder = tmp_path / "run" / "version_0"
    files = publish_report(report, folder, loggers=[], step=0)

    names = ["test_report.txt", "test_report.csv", *(f"test_{name}.png" for name in PLOTS[task_name])]
    assert files == [folder / name for name in names]
    assert sorted(path.name for path in folder.iterdir()) == sorted(names)
    assert (folder / "test_report.txt").read_text() == f"{report.title}\n{report.text}\n"
    pd.testing.assert_frame_equal(
        pd.read_csv(folder / "test_report.csv", keep_default_na=False, na_values=[""]),
        report.table.reset_index(drop=True),
        check_dtype=False,
    )
    for path in files[2:]:
        assert_valid_png(path)
    # Figures are released: none is left in pyplot's registry, and none stays alive.
    assert plt.get_fignums() == open_before
    gc.collect()
    assert len(drawn) == len(PLOTS[task_name]) and all(reference() is None for reference in drawn)


def test_figure_sizes_grow_with_the_number_of_labels(tmp_path: Path) -> None:
    many = {f"emotion {index}": index / 30 for index in range(28)}
    curves = {name: PrecisionRecallCurve(np.array([1.0, 0.5]), np.array([0.0, 1.0])) for name in many}
    report = TestReport("t", "x", pd.DataFrame(), f1=many, pr_curves=curves)
    files = publish_report(report, tmp_path, [], step=0)
    few = publish_report(TestReport("t", "x", pd.DataFrame(), f1={"a": 0.5}), tmp_path / "few", [], step=0)
    bars_width, bars_height = assert_valid_png(files[2])
    assert (bars_width, bars_height) == (720, int(120 * (0.28 * 28 + 1.2)))
    assert assert_valid_png(few[2]) == (720, 300)  # 6 x 2.5 inches at 120 dpi
    assert assert_valid_png(files[3]) == (int(120 * (7 + 2 * 1.6)), 600)  # a two-column legend


# --- publishing: W&B and TensorBoard --------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch) -> list:
    """Fail any connection from this process to anything but this machine (W&B's own service is local)."""
    attempts = []
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def local(sock: socket.socket, address) -> bool:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        return address[0] in ("127.0.0.1", "::1", "localhost")

    def guarded(original):
        def guard(sock, address):
            if not local(sock, address):
                attempts.append(address)
                raise OSError(f"test tried to reach {address}")
            return original(sock, address)

        return guard

    monkeypatch.setattr(socket.socket, "connect", guarded(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(connect_ex))
    return attempts


def wait_for_exit_record(folder: Path, seconds: float = 20.0) -> Path:
    """``finish()`` can return before W&B's service has flushed the run's log: wait for its closing record."""
    from wandb_files import read_records

    deadline = time.monotonic() + seconds
    while True:
        logs = list(folder.rglob("run-*.wandb"))
        try:
            if logs and any(record.WhichOneof("record_type") == "exit" for record in read_records(logs[0])):
                return folder
        except ValueError:  # a chunk still being written
            pass
        assert time.monotonic() < deadline, f"no complete W&B run log under {folder}"
        time.sleep(0.1)


def logged_table(run, row: dict, key: str) -> dict:
    assert row[f"{key}/_type"] == "table-file"
    return json.loads((run.folder / "files" / row[f"{key}/path"]).read_text())


def chart(run, key: str) -> str:
    return run.config[f"_wandb/visualize/{key}"]["panel_config"]["panelDefId"]


def test_publish_logs_table_charts_and_images_to_wandb_offline(tmp_path: Path, no_network: list) -> None:
    import os

    from lightning.pytorch.loggers import WandbLogger
    from wandb_files import offline_runs

    assert "WANDB_API_KEY" not in os.environ
    reports = {name: CASES[name]() for name in ("single_label", "multi_label", "token")}
    logger = WandbLogger(save_dir=tmp_path, project="t", mode="offline")
    try:
        for step, report in zip((3, 5, 7), reports.values(), strict=True):
            publish_report(report["report"], tmp_path / "files", [logger], step)
    finally:
        logger.experiment.finish()
    assert no_network == []

    (run,) = offline_runs(wait_for_exit_record(tmp_path))
    rows = [row for row in run.history if "trainer/global_step" in row]
    assert [row["trainer/global_step"] for row in rows] == [3, 5, 7], "one log call per report"
    for row, (task_name, case) in zip(rows, reports.items(), strict=True):
        report: TestReport = case["report"]
        table = logged_table(run, row, "test/report")
        assert table["columns"] == report.table.columns.tolist()
        expected = report.table.astype(object).where(report.table.notna(), None).to_numpy().tolist()
        assert table["data"] == expected, task_name
        for name in PLOTS[task_name]:
            image = f"test/plots/{name}"
            assert row[f"{image}/_type"] == "image-file"
            logged = run.folder / "files" / row[f"{image}/path"]
            assert (row[f"{image}/width"], row[f"{image}/height"]) == assert_valid_png(logged)
        assert {key.split("/")[2] for key in row if key.startswith("test/plots/")} == set(PLOTS[task_name])

    single, multi, token = rows
    counts = logged_table(run, single, "test/confusion_matrix_table")
    assert counts["columns"] == ["Actual", "Predicted", "nPredictions"]
    confusion = reports["single_label"]["report"].confusion
    assert {(actual, predicted): n for actual, predicted, n in counts["data"]} == {
        (LABELS[true], LABELS[predicted]): count for (true, predicted), count in np.ndenumerate(confusion)
    }
    assert chart(run, "test/confusion_matrix") == "wandb/confusion_matrix/v1"

    bars = logged_table(run, multi, "test/per_label_f1_table")
    assert dict(bars["data"]) == pytest.approx(reports["multi_label"]["report"].f1)
    assert chart(run, "test/per_label_f1") == "wandb/bar/v0"
    lines = logged_table(run, multi, "test/pr_curves_table")
    curves = reports["multi_label"]["report"].pr_curves
    assert lines["columns"] == ["step", "lineKey", "lineVal"]
    assert len(lines["data"]) == sum(len(curve.recall) for curve in curves.values())
    first = curves["label 0"]
    points = [(x, y) for x, key, y in lines["data"] if key == "label 0"]
    assert points == list(zip(first.recall.tolist(), first.precision.tolist(), strict=True))
    assert chart(run, "test/pr_curves") == "wandb/lineseries/v0"
    assert dict(logged_table(run, token, "test/per_type_f1_table")["data"]) == pytest.approx(
        reports["token"]["report"].f1
    )
    assert chart(run, "test/per_type_f1") == "wandb/bar/v0"

    # Tables travel as run artifacts too (uploaded by `wandb sync`).
    manifests = {path for artifact in run.artifacts for path in (entry.path for entry in artifact.manifest.contents)}
    assert {"test/report.table.json", "test/confusion_matrix_table.table.json"} <= manifests


@pytest.mark.parametrize("task_name", list(CASES))
def test_publish_adds_figures_and_the_text_to_tensorboard(task_name: str, tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    report: TestReport = CASES[task_name]()["report"]
    tensorboard, csv = TensorBoardLogger(tmp_path / "tb"), CSVLogger(tmp_path / "csv")
    publish_report(report, tmp_path / "files", [tensorboard, csv], step=11)
    tensorboard.finalize("success")

    events = EventAccumulator(tensorboard.log_dir, size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == [f"test/{name}" for name in PLOTS[task_name]]
    for name in PLOTS[task_name]:
        (image,) = events.Images(f"test/{name}")
        assert image.step == 11 and image.width >= 200 and image.height >= 200
        assert image.encoded_image_string[:8] == PNG_MAGIC
    (text,) = events.Tensors("test/report/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert markdown == f"**{report.title}**\n\n```\n{report.text}\n```"
    assert not (tmp_path / "csv").exists(), "the CSV logger gets nothing: the files are in its folder already"


# --- bertcls test, for real ---------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used to create")
def test_bertcls_test_writes_the_report_and_logs_it_to_tensorboard(
    tmp_path: Path, run_dir: Path, tiny_model_dir: Path, real_words: list[str], lightning_messages: list[str]
) -> None:
    labels = ("pos", "neg", "neutral")
    train = write_frame(separable_frame(real_words, 48, seed=1, labels=labels), tmp_path / "train.csv")
    test = write_frame(separable_frame(real_words, 30, seed=2, labels=labels), tmp_path / "test.csv")
    common = ["--data.where", "null", "--data.max_length", "24", "--experiment", "report"]
    fit = [
        "fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", tiny_model_dir,
        "--data.train_file", train, "--data.batch_size", "16", "--trainer.max_epochs", "1",
        "--trainer.enable_model_summary", "false", *common,
    ]  # fmt: skip
    assert run_cli(*fit) is None
    (checkpoint,) = (run_dir / "checkpoints" / "report" / "version_0" / "checkpoints").glob("last*.ckpt")
    logger = ("--trainer.logger", CONFIGS / "logger" / "tensorboard.yaml")
    assert run_cli("test", "--ckpt_path", checkpoint, "--data.test_file", test, *logger, *common) is None

    # Beside the run's checkpoints: the test's own log folder (where the run-folder policy puts it).
    (text_file,) = (run_dir / "checkpoints" / "report").rglob("test_report.txt")
    version = text_file.parent
    assert (version / "test_report.csv").is_file() and (version / "metrics.csv").is_file()
    assert_valid_png(version / "test_confusion_matrix.png")
    table = pd.read_csv(version / "test_report.csv").set_index("name")
    assert table.loc[["neg", "neutral", "pos"], "support"].tolist() == [10, 10, 10]
    logged = pd.read_csv(version / "metrics.csv").dropna(subset=["test/accuracy"]).iloc[-1]
    assert table.loc["accuracy", "f1"] == pytest.approx(logged["test/accuracy"], abs=1e-6)
    (message,) = [message for message in lightning_messages if "Test classification report" in message]
    assert (version / "test_report.txt").read_text().strip() in message
    assert f"Report files in {version}" in message or f"Report files in {version.relative_to(run_dir)}" in message

    (events_folder,) = {path.parent for path in (version / "tensorboard").rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(events_folder), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert "test/confusion_matrix" in events.Tags()["images"]
    assert "test/report/text_summary" in events.Tags()["tensors"]
