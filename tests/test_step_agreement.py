"""One collective per training step: the finite-loss check and Preemption's signal flags share one all-reduce
(``bertcls.step_agreement``), and a signal that reaches one rank alone still stops every rank at the same step."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import CONFIGS, run_bertcls_process, separable_frame, write_frame

from bertcls.step_agreement import StepAgreement

TRAIN_ROWS, BATCH_SIZE = 160, 8  # two ranks: 10 steps an epoch


class CountingStrategy:
    """A one-process stand-in whose ``reduce`` counts its calls (what every rank would all-reduce)."""

    root_device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls = 0

    def reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        self.calls += 1
        return tensor


def test_the_values_and_every_source_are_agreed_in_one_reduce() -> None:
    agreement, strategy = StepAgreement(), CountingStrategy()
    signalled = {"value": False}
    agreement.add_source("preempt", lambda: signalled["value"])
    loss_flags = ~torch.isfinite(torch.tensor([1.0, float("nan")]))
    assert agreement.agree(strategy, nonfinite_loss=loss_flags) == {"nonfinite_loss": True, "preempt": False}
    signalled["value"] = True
    assert agreement.agree(strategy, nonfinite_loss=torch.tensor(False)) == {"nonfinite_loss": False, "preempt": True}
    assert agreement.agreed == {"nonfinite_loss": False, "preempt": True}
    assert agreement.agree(strategy) == {"preempt": True}  # the sources alone (Preemption after validation)
    assert strategy.calls == 3


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, real_words: list[str]) -> SimpleNamespace:
    """2-rank CPU DDP; SIGUSR1 reaches rank 1 alone at step 4 of 20; collectives counted per training batch."""
    folder = tmp_path_factory.mktemp("step-agreement")
    train = write_frame(separable_frame(real_words, TRAIN_ROWS, seed=1), folder / "train.csv")
    dev = write_frame(separable_frame(real_words, 40, seed=2), folder / "dev.csv")
    args = [
        "fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", tiny_model_dir,
        "--data.train_file", train, "--data.validation_file", dev, "--data.where", "null",
        "--data.max_length", "32", "--data.batch_size", BATCH_SIZE, "--trainer.max_epochs", 2,
        "--trainer.accelerator", "cpu", "--trainer.devices", 2,
        "--trainer.strategy", "lightning.pytorch.strategies.DDPStrategy", "--trainer.strategy.timeout", "0:02:00",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.callbacks+=helpers.SignalOneRank", "--trainer.callbacks+=helpers.CountCollectives",
        "--experiment", "signalled",
    ]  # fmt: skip
    env = {
        "BERTCLS_CACHE": str(folder / "cache"),
        "BERTCLS_TEST_RECORD_DIR": str(folder / "records"),
        "BERTCLS_TEST_SIGNAL_AT_STEP": "4",
        "BERTCLS_TEST_SIGNAL_RANK": "1",
    }
    result = run_bertcls_process(*args, cwd=folder, env=env)
    return SimpleNamespace(folder=folder, result=result)


def test_a_signal_on_one_rank_stops_both_at_the_same_step(ddp_run: SimpleNamespace) -> None:
    result = ddp_run.result
    assert result.returncode == 0, result.stderr[-4000:]
    assert "SIGUSR1: saved" in result.stderr + result.stdout
    last = ddp_run.folder / "checkpoints" / "signalled" / "version_0" / "checkpoints" / "last.ckpt"
    # Signalled before step 4's batch: its training step agreed on the flag, so the save follows that step.
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 5


def test_preemption_adds_no_collective_to_a_training_step(ddp_run: SimpleNamespace) -> None:
    """Until the stop, every training batch makes exactly one collective on each rank: the step agreement (the
    throughput window's all-reduce every 20 batches does not fall inside these 5)."""
    assert ddp_run.result.returncode == 0, ddp_run.result.stderr[-4000:]
    for rank in (0, 1):
        # Preemption stops the run inside the 5th batch's end hooks, before this recorder's.
        per_batch = torch.load(ddp_run.folder / "records" / f"collectives-rank{rank}.pt", weights_only=True)
        assert per_batch == [1, 1, 1, 1], per_batch
