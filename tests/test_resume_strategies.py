"""A mid-epoch resume trains exactly the rows of the uninterrupted run, in its order, under the strategies that
restore the checkpoint only after ``setup`` (DeepSpeed and FSDP do): there, Lightning builds the training loader
(for ``estimated_stepping_batches``, and DeepSpeed once more for its batch size) before the data module gets the
checkpoint's position in the epoch.

Each case SIGKILLs ``bertcls fit`` mid-epoch, after a ``last.ckpt`` save, resumes it with ``--ckpt_path last`` and
compares the rows of every training batch (recorded by ``helpers.RecordRowsToFile`` across both processes) and the
final weights with an uninterrupted run's, bitwise: DeepSpeed runs (``bertcls.strategies.CPUDeepSpeedStrategy``, the
real ZeRO engine on the CPU) are deterministic too. Each process is its own: DeepSpeed's globals outlive a run.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from helpers import (
    assert_same_tensors,
    assert_same_training_state,
    fit_and_read_records,
    last_checkpoint,
    resumable_fit_args,
    run_checkpoints,
)

from bertcls.commands import convert

TRAIN_ROWS, BATCH_SIZE, EPOCHS, SAVE_EVERY = 160, 16, 2, 4  # 10 batches an epoch; last.ckpt at steps 4, 8, 10, ...
NEEDS_DEEPSPEED = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="DeepSpeed (the optional extra) is not installed: pip install 'bertcls[deepspeed]'",
)
DEEPSPEED = "bertcls.strategies.CPUDeepSpeedStrategy"


def deepspeed(stage: int, **init_args: object) -> dict[str, Any]:
    return {"class_path": DEEPSPEED, "init_args": {"stage": stage, **init_args}}


# (the optimizer step a run is killed at, the (epoch, batch) its resumption starts at), with last.ckpt at steps 4,
# 8, 10 (epoch end), 12, ...: mid first epoch; mid second epoch, where the sampler's epoch must be right too.
MID_FIRST_EPOCH, MID_SECOND_EPOCH = (6, (0, 4)), (15, (1, 2))


@dataclass(frozen=True)
class Case:
    strategy: dict[str, Any]
    fit_arguments: tuple[str, ...] = ()
    kills: tuple[tuple[int, tuple[int, int]], ...] = (MID_FIRST_EPOCH, MID_SECOND_EPOCH)

    @property
    def deepspeed(self) -> bool:
        return self.strategy["class_path"] == DEEPSPEED


RESTORE_AFTER_SETUP = {"class_path": "bertcls.strategies.RestoreAfterSetupDDPStrategy"}
ZERO2 = deepspeed(2, logging_batch_size_per_gpu=BATCH_SIZE)
CASES = {
    "ddp-restore-after-setup": Case(RESTORE_AFTER_SETUP),
    # A worker process takes batches as soon as the loader's pass starts, which Lightning starts before the restore.
    "ddp-restore-after-setup-workers": Case(RESTORE_AFTER_SETUP, ("--data.num_workers", "1"), (MID_SECOND_EPOCH,)),
    "zero2": Case(ZERO2),
    "zero3": Case(deepspeed(3, logging_batch_size_per_gpu=BATCH_SIZE), kills=(MID_SECOND_EPOCH,)),
    # Without logging_batch_size_per_gpu, Lightning builds the training loader once more to read its batch size.
    "zero2-batch-size-from-loader": Case(deepspeed(2), kills=(MID_FIRST_EPOCH,)),
    # DeepSpeed accumulates by itself. 5 optimizer steps an epoch: last.ckpt at steps 4 (after batch 7), 5 (epoch
    # end), 8 (after epoch 1's batch 5) and 10; never between the two batches of one step.
    "zero2-accumulate-2": Case(ZERO2, ("--trainer.accumulate_grad_batches", "2"), ((4, (0, 8)), (9, (1, 6)))),
}
KILLS = [
    pytest.param(
        name, kill_at_step, resumes_at, marks=[NEEDS_DEEPSPEED] if case.deepspeed else [], id=f"{name}-{kill_at_step}"
    )
    for name, case in CASES.items()
    for kill_at_step, resumes_at in case.kills
]

pytestmark = [
    pytest.mark.strategies,
    pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used to create"),
]


@pytest.fixture(scope="module")
def reference(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    real_words: list[str],
) -> SimpleNamespace:
    """The uninterrupted run of one case (``request.param``), with the arguments and folder its killed runs share."""
    name = request.param
    case = CASES[name]
    folder = tmp_path_factory.mktemp(f"resume-{name}")
    (folder / "strategy.yaml").write_text(yaml.safe_dump(case.strategy))
    args = resumable_fit_args(
        folder, tiny_model_dir, real_words, train_rows=TRAIN_ROWS, batch_size=BATCH_SIZE, epochs=EPOCHS,
        save_every=SAVE_EVERY,
    )  # fmt: skip
    args += ["--trainer.strategy", folder / "strategy.yaml", *case.fit_arguments]
    args += ["--trainer.callbacks+=helpers.RecordRowsToFile"]
    run = SimpleNamespace(case=case, folder=folder, args=args, env={"BERTCLS_CACHE": str(folder / "cache")})
    run.rows = fit(run, "reference")
    return run


def fit(run: SimpleNamespace, experiment: str, *extra: object, env: dict[str, str] | None = None) -> list[dict]:
    """Run ``bertcls fit`` to its end (or its kill); the rows of its training batches (``RecordRowsToFile``)."""
    return fit_and_read_records(run, experiment, "BERTCLS_TEST_ROWS_FILE", *extra, env=env)


def kill_and_resume(run: SimpleNamespace, experiment: str, kill_at_step: int) -> tuple[list[dict], list[dict]]:
    """SIGKILL a run when it reaches ``kill_at_step`` and resume it from ``last.ckpt``: the rows that the killed
    process trained before the batch that the resumed one starts with, and those of the resumed one."""
    kill = {"BERTCLS_TEST_SIGNAL": "SIGKILL", "BERTCLS_TEST_SIGNAL_AT_STEP": str(kill_at_step)}
    killed = fit(run, experiment, "--trainer.callbacks+=helpers.SignalAtStep", env=kill)
    resumed = fit(run, experiment, "--ckpt_path", "last")
    return [record for record in killed if position(record) < position(resumed[0])], resumed


def position(record: dict) -> tuple[int, int]:
    return record["epoch"], record["batch"]


def final_weights(run: SimpleNamespace, experiment: str) -> dict[str, torch.Tensor]:
    """The weights in the run's ``last.ckpt``; a DeepSpeed checkpoint folder is gathered with ``bertcls convert``."""
    last = run_checkpoints(run.folder, experiment) / "last.ckpt"
    if last.is_dir():
        plain = run.folder / f"{experiment}-converted.ckpt"
        convert.main([str(last), "--to", str(plain), "--overwrite"])
        last = plain
    return torch.load(last, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize(("reference", "kill_at_step", "resumes_at"), KILLS, indirect=["reference"])
def test_killed_mid_epoch_and_resumed_trains_the_uninterrupted_runs_rows(
    reference: SimpleNamespace, kill_at_step: int, resumes_at: tuple[int, int]
) -> None:
    experiment = f"killed-at-{kill_at_step}"
    before, resumed = kill_and_resume(reference, experiment, kill_at_step)

    assert position(resumed[0]) == resumes_at, "the resumed run starts after the checkpoint's batches"
    trained = before + resumed
    assert [position(record) for record in trained] == [position(record) for record in reference.rows]
    for expected, actual in zip(reference.rows, trained, strict=True):
        where = f"epoch {actual['epoch']} batch {actual['batch']}"
        assert actual["rows"] == expected["rows"], f"{where}: not the uninterrupted run's rows"
    for epoch in range(EPOCHS):  # so every row once per epoch: none trained twice, none missed
        rows = sorted(row for record in trained if record["epoch"] == epoch for row in record["rows"])
        assert rows == list(range(TRAIN_ROWS)), f"epoch {epoch}: rows trained twice or not at all"

    if not reference.case.deepspeed:  # one file: weights, optimizer state and schedule
        expected, actual = last_checkpoint(reference.folder, "reference"), last_checkpoint(reference.folder, experiment)
        assert_same_training_state(expected, actual)
    else:  # ZeRO shards: the weights they gather to
        assert_same_tensors(final_weights(reference, "reference"), final_weights(reference, experiment), "state_dict")
