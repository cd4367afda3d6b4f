"""The test report (per-class scores, the scikit-learn-style table) and the confusion-matrix image."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from sklearn.metrics import classification_report as sklearn_report
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from bertcls.reporting import classification_report, per_class_scores, save_confusion_matrix

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
