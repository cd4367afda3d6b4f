"""The progress display: Lightning's rich bar on a terminal, one plain line every N batches in a log file.

A real ``bertcls fit`` with stdout piped (as in a SLURM job's output file) and another under a pseudo-terminal,
on the tiny BERT; test, predict, a loader without a length and non-zero ranks in-process on Lightning's
``BoringModel`` (seconds, where a ``bertcls`` process costs ten).
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import lightning as L
import pandas as pd
import pytest
import torch
import yaml
from helpers import CONFIGS, REPO_ROOT, separable_frame, write_frame
from lightning.pytorch.demos.boring_classes import BoringModel, RandomIterableDataset
from torch.utils.data import DataLoader

from bertcls.callbacks import ProgressBar, Throughput

TRAIN_ROWS, BATCH_SIZE, EVERY = 80, 8, 3  # 10 batches per epoch: plain lines after batches 3, 6 and 9
CLOCK = r"\d+:\d\d"
STEP_LINE = re.compile(
    rf"epoch (\d)/(\d)  step (\d+)/10 \((\d+\.\d)%\)  loss (\d\.\d{{4}})(?:  \S+ \S+)*  elapsed {CLOCK}  eta {CLOCK}"
)
PLAIN_LINE = re.compile(r"(training|epoch \d\S*|validation)  ")
# Whatever would make rich take a pipe for a terminal (CI systems set some of these).
TERMINAL_OVERRIDES = ("FORCE_COLOR", "TTY_COMPATIBLE", "FORCE_TERMINAL")


@pytest.fixture(autouse=True)
def no_forced_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TERMINAL_OVERRIDES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, real_words: list[str]) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("progress")
    callbacks = yaml.safe_load((CONFIGS / "callbacks" / "default.yaml").read_text())
    (progress,) = [callback for callback in callbacks if callback["class_path"] == "bertcls.callbacks.ProgressBar"]
    progress["init_args"]["every_n_steps"] = EVERY
    (folder / "callbacks.yaml").write_text(yaml.safe_dump(callbacks))
    train = write_frame(separable_frame(real_words, TRAIN_ROWS, seed=1), folder / "train.csv")
    dev = write_frame(separable_frame(real_words, 24, seed=2), folder / "dev.csv")
    args = [
        "fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", tiny_model_dir,
        "--data.train_file", train, "--data.validation_file", dev, "--data.where", "null",
        "--data.max_length", "32", "--data.batch_size", BATCH_SIZE, "--trainer.enable_model_summary", "false",
        "--trainer.callbacks", folder / "callbacks.yaml",
    ]  # fmt: skip
    return SimpleNamespace(folder=folder, args=args)


def test_log_file_gets_one_plain_line_every_n_batches(task: SimpleNamespace, run_dir: Path) -> None:
    """stdout piped, as in a SLURM job: no bar, no carriage return; start, step and validation lines, and the
    figures they show are the logged ones. The sanity check (on here) prints nothing."""
    extra = ("--trainer.max_epochs", "2", "--trainer.num_sanity_val_steps", "2", "--trainer.log_every_n_steps", "1")
    command, env = bertcls_command([*task.args, *extra, "--experiment", "piped"])
    # Bytes: text mode would turn every carriage return into a newline. transformers' own "Loading weights" bar
    # (tqdm, on stderr) is switched off here: this test is about the progress bar.
    done = subprocess.run(command, cwd=run_dir, env=env | {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}, capture_output=True)
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, stderr[-3000:]
    assert "\r" not in stdout + stderr
    assert "\x1b[" not in stdout  # no cursor movement, no colour
    lines = [line for line in stdout.splitlines() if PLAIN_LINE.match(line)]
    assert lines[0] == "training  2 epochs  10 batches per epoch"
    steps = [STEP_LINE.fullmatch(line) for line in lines if line.startswith("epoch")]
    assert all(steps), lines
    positions = [(int(step[1]), int(step[3])) for step in steps]
    assert positions == [(1, 3), (1, 6), (1, 9), (2, 3), (2, 6), (2, 9)]
    assert [step[4] for step in steps] == ["30.0", "60.0", "90.0"] * 2
    validations = [line for line in lines if line.startswith("validation")]
    assert len(validations) == 2  # one per epoch, none for the sanity check
    assert [line.split()[0] for line in lines[1:]] == (["epoch"] * 3 + ["validation"]) * 2

    (metrics_file,) = run_dir.glob("checkpoints/piped/*/metrics.csv")
    metrics = pd.read_csv(metrics_file)
    losses = metrics.dropna(subset=["train/loss"]).set_index("step")["train/loss"]  # logged at every step
    for step in steps:
        global_step = (int(step[1]) - 1) * 10 + int(step[3]) - 1
        assert float(step[5]) == pytest.approx(losses[global_step], abs=5e-5)
    logged = metrics.dropna(subset=["val/accuracy"]).reset_index(drop=True)
    for epoch, line in enumerate(validations):
        assert line.startswith(f"validation  epoch {epoch + 1}/2  val/")
        shown = dict(re.findall(r"(val/\S+) (\d+\.\d{4})", line))
        assert {"val/accuracy", "val/loss"} <= set(shown)
        for name, value in shown.items():
            assert float(value) == pytest.approx(logged.loc[epoch, name], abs=5e-5), name
    assert list(run_dir.glob("checkpoints/piped/*/checkpoints/best-*.ckpt"))  # and the run did its work


def bertcls_command(args: list[object]) -> tuple[list[str], dict[str, str]]:
    """``python -m bertcls ARGS`` and its environment, as ``helpers.run_bertcls_process`` runs it."""
    env = {name: value for name, value in os.environ.items() if name not in TERMINAL_OVERRIDES}
    env["PYTHONPATH"] = str(REPO_ROOT / "tests")
    env.pop("PL_GLOBAL_SEED", None)
    return [sys.executable, "-m", "bertcls", *map(str, args)], env


def run_in_terminal(args: list[object], cwd: Path) -> tuple[int, str]:
    """``python -m bertcls ARGS`` with stdout and stderr on a pseudo-terminal; its exit code and all it wrote."""
    controller, terminal = pty.openpty()
    command, env = bertcls_command(args)
    env |= {"TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks, deadline = [], time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 1)[0]:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the process has exited and closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif process.poll() is not None:
                break
    finally:
        os.close(controller)
    return process.wait(timeout=60), b"".join(chunks).decode("utf-8", errors="replace")


def test_terminal_gets_lightnings_rich_bar(task: SimpleNamespace, run_dir: Path) -> None:
    """On a terminal: the live rich bar (cursor control, batch counter, short metric names, no v_num) and none
    of the plain lines."""
    code, output = run_in_terminal([*task.args, "--experiment", "terminal"], run_dir)
    assert code == 0, output[-3000:]
    assert "\x1b[?25l" in output  # rich's live display hides the cursor while it redraws
    assert "\x1b[2K" in output or "\x1b[1A" in output  # and erases / moves up to redraw
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert "Epoch 0/0" in text and "10/10" in text  # Lightning's own labels: epochs counted from 0
    assert re.search(r"loss: \d\.\d{3}", text)
    assert "v_num" not in text and "train/loss" not in text
    assert not any(PLAIN_LINE.match(line) for line in text.splitlines())
    assert list(run_dir.glob("checkpoints/terminal/*/checkpoints/best-*.ckpt"))


# --- in-process, on Lightning's BoringModel -----------------------------------------------------------
class LoggingModel(BoringModel):
    """Logs fixed throughput figures and its loss to the progress bar, as bertcls' model and callbacks do."""

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> dict[str, torch.Tensor]:
        loss = self.step(batch)
        self.log("train/loss", loss, prog_bar=True)
        speed = {"samples_per_sec": 54.21, "tokens_per_sec": 2310.4, "padding_efficiency": 0.8734}
        self.log_dict({f"speed/{name}": value for name, value in speed.items()}, prog_bar=True)
        return {"loss": loss}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RandomIterableDataset(32, 6))  # no length: the total is unknown


def boring_trainer(
    root: Path, every_n_steps: int, callbacks: list[L.Callback] | None = None, **kwargs: object
) -> L.Trainer:
    return L.Trainer(
        callbacks=callbacks or [ProgressBar(every_n_steps=every_n_steps)],
        default_root_dir=root,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_test_and_predict_print_every_n_batches_and_at_the_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = boring_trainer(tmp_path, every_n_steps=25)
    trainer.test(BoringModel(), verbose=False)
    trainer.predict(BoringModel())
    lines = capsys.readouterr().out.splitlines()
    for name in ("test", "predict"):
        mine = [line for line in lines if line.startswith(f"{name}  ")]
        assert len(mine) == 3, lines
        for line, done, percent in zip(mine, (25, 50), ("39.1", "78.1"), strict=False):
            assert re.fullmatch(rf"{name}  batch {done}/64 \({percent}%\)  elapsed {CLOCK}  eta {CLOCK}", line)
        assert re.fullmatch(rf"{name}  finished 64 batches  elapsed {CLOCK}", mine[2])


def test_loader_without_length_and_metric_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a length: no total, percentage or ETA. Known metrics get short names and their own formats."""
    trainer = boring_trainer(tmp_path, every_n_steps=2, max_epochs=1, limit_val_batches=0)
    trainer.fit(LoggingModel())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "training  1 epoch  batches per epoch unknown"
    metrics = r"loss \d+\.\d{4}  samples/s 54\.2  tokens/s 2310  padding 87\.3%"
    for line, step in zip(lines[1:], (2, 4, 6), strict=True):
        assert re.fullmatch(rf"epoch 1/1  step {step}  {metrics}  elapsed {CLOCK}", line), line


class MaskedModel(BoringModel):
    """``BoringModel`` on batches with an ``attention_mask``, as ``Throughput`` measures them."""

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"loss": self.step(batch["x"])}

    def train_dataloader(self) -> DataLoader:
        return DataLoader([{"x": torch.randn(32), "attention_mask": torch.ones(4, dtype=torch.long)}] * 64)


class FakeClock(L.Callback):
    """The progress bar's clock: far from zero (a machine's uptime), two seconds more at each training batch."""

    def __init__(self) -> None:
        self.now = 86_400.0

    def monotonic(self) -> float:
        return self.now

    def on_train_batch_start(self, *args: object) -> None:
        self.now += 2.0


class SaveAt(L.Callback):
    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


def test_lines_after_a_resume_count_from_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Resumed at step 20 of 64: elapsed since the resume (said so), the ETA at this process's speed (2 s a batch),
    no speed before Throughput's first window since the resume (batch 40); the next epoch counts from its start."""
    checkpoint = tmp_path / "step20.ckpt"
    options = {"max_epochs": 1, "limit_val_batches": 0}
    boring_trainer(tmp_path, 1000, callbacks=[SaveAt(20, checkpoint)], **options).fit(MaskedModel())
    capsys.readouterr()
    clock = FakeClock()
    callbacks = [Throughput(window=20), ProgressBar(every_n_steps=10), clock]  # the order of the callbacks config
    trainer = boring_trainer(tmp_path, 10, callbacks=callbacks, **options | {"max_epochs": 2})
    with mock.patch("bertcls.callbacks.progress.time", clock):
        trainer.fit(MaskedModel(), ckpt_path=checkpoint)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "training  2 epochs  64 batches per epoch  resuming at epoch 1, step 20"
    speed = r"samples/s \d+\.\d"
    expected = [
        r"epoch 1/2  step 30/64 \(46\.9%\)  samples/s measuring  elapsed 0:20 since the resume  eta 1:08",
        rf"epoch 1/2  step 40/64 \(62\.5%\)  {speed}  .*  elapsed 0:40 since the resume  eta 0:48",
        rf"epoch 1/2  step 50/64 \(78\.1%\)  {speed}  .*  elapsed 1:00 since the resume  eta 0:28",
        rf"epoch 1/2  step 60/64 \(93\.8%\)  {speed}  .*  elapsed 1:20 since the resume  eta 0:08",
        rf"epoch 2/2  step 10/64 \(15\.6%\)  {speed}  .*  elapsed 0:20  eta 1:48",  # epoch 1's last window
    ]
    for line, pattern in zip(lines[1:6], expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def test_non_zero_ranks_print_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = BoringModel()
    with mock.patch.object(L.Trainer, "is_global_zero", new_callable=mock.PropertyMock, return_value=False):
        boring_trainer(tmp_path, every_n_steps=1, max_epochs=1).fit(model)
    assert capsys.readouterr().out == ""
    boring_trainer(tmp_path, every_n_steps=1, max_epochs=1).fit(model)  # the same run on rank 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 64 + 1  # start, every batch, validation
