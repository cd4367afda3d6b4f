"""A NaN training loss: the run stops naming the step and the batch's rows, or skips the batch when told to.

The loss of chosen batches is made NaN by a callback (``PoisonLoss``), in a real ``bertcls fit`` of a tiny model.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pandas as pd
import pytest
import torch
from helpers import separable_frame, write_frame
from test_cli_end_to_end import fit_args, run_in

from bertcls.model.nonfinite import MAX_SKIPPED_IN_A_ROW

POISON = "--trainer.callbacks+=test_nonfinite.PoisonLoss"
TRAIN_ROWS = 16 * 12  # 12 batches of 16


class PoisonLoss(L.Callback):
    """Multiplies the head's loss by NaN on the batches in ``batches``, and records their rows."""

    batches: set[int] = set()
    rows: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, index: int) -> None:
        head = pl_module.head
        head.__dict__.pop("loss", None)  # the class's own method again
        if index in PoisonLoss.batches:
            original = head.loss
            head.loss = lambda logits, labels: original(logits, labels) * float("nan")
            PoisonLoss.rows[index] = sorted({int(row) + 1 for row in batch["rows"]})


@pytest.fixture
def task(real_words: list[str], tmp_path: Path) -> SimpleNamespace:
    PoisonLoss.batches, PoisonLoss.rows = set(), {}
    return SimpleNamespace(
        train=write_frame(separable_frame(real_words, TRAIN_ROWS, seed=1), tmp_path / "train.csv"),
        validation=write_frame(separable_frame(real_words, 32, seed=2), tmp_path / "dev.csv"),
    )


def test_a_nan_loss_stops_the_run_naming_the_step_and_rows(
    tiny_model_dir: Path, task: SimpleNamespace, tmp_path: Path
) -> None:
    PoisonLoss.batches = {3}
    exit_ = run_in(tmp_path, *fit_args(tiny_model_dir, task, "nan", 1, POISON))
    assert isinstance(exit_, SystemExit)
    message = str(exit_)
    rows = ", ".join(map(str, PoisonLoss.rows[3][:10]))
    assert "The training loss is nan at optimizer step 3 (epoch 1, batch 3)" in message
    assert f"holds rows {rows}" in message and str(task.train) in message
    assert "model.learning_rate" in message and "--model.nonfinite_loss skip" in message


def test_skip_leaves_out_the_bad_batches_and_counts_them(
    tiny_model_dir: Path, task: SimpleNamespace, tmp_path: Path
) -> None:
    PoisonLoss.batches = {2, 7, 8}
    extra = ("--model.nonfinite_loss", "skip", "--trainer.log_every_n_steps", "1", POISON)
    assert run_in(tmp_path, *fit_args(tiny_model_dir, task, "skip", 1, *extra)) is None
    run = tmp_path / "checkpoints" / "skip" / "version_0"
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # Lightning counts every batch's optimizer call; AdamW updates (and counts) only those with gradients.
    steps = {float(state["step"]) for state in last["optimizer_states"][0]["state"].values()}
    assert steps == {12 - 3}, "a skipped batch has no backward pass, so AdamW leaves every weight alone"
    assert all(torch.isfinite(tensor).all() for tensor in last["state_dict"].values())
    assert "nonfinite_loss" not in last["hyper_parameters"], "a resumed run chooses again"
    skipped = pd.read_csv(run / "metrics.csv")["train/skipped_batches"].dropna().tolist()
    assert sorted(set(skipped)) == [1.0, 2.0, 3.0] and skipped[-1] == 3.0  # a running count


def test_skipping_stops_after_too_many_bad_batches_in_a_row(
    tiny_model_dir: Path, task: SimpleNamespace, tmp_path: Path
) -> None:
    PoisonLoss.batches = set(range(1, 12))
    extra = ("--model.nonfinite_loss", "skip", POISON)
    exit_ = run_in(tmp_path, *fit_args(tiny_model_dir, task, "broken", 1, *extra))
    assert isinstance(exit_, SystemExit)
    assert f"batch {MAX_SKIPPED_IN_A_ROW}" in str(exit_)
    assert f"That is {MAX_SKIPPED_IN_A_ROW} batches in a row with a non-finite loss" in str(exit_)


def test_unknown_action_is_refused_by_the_cli(tiny_model_dir: Path, task: SimpleNamespace, tmp_path: Path) -> None:
    exit_ = run_in(tmp_path, *fit_args(tiny_model_dir, task, "x", 1, "--model.nonfinite_loss", "ignore"))
    assert isinstance(exit_, SystemExit) and exit_.code != 0
    assert "nonfinite_loss" in str(exit_.__context__ or exit_)
