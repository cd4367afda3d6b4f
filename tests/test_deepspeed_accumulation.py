"""Under DeepSpeed, gradient accumulation steps where it does under every other strategy: after every
``accumulate_grad_batches`` batches, and once more at an epoch's end to close its last, partial accumulation.
The engine's updates, Lightning's step count (the schedule, ``global_step``, checkpoint timing) and a resumed
run's updates all agree.

7 batches an epoch with ``accumulate_grad_batches`` 2: steps after batches 1, 3, 5 and 6 of every epoch. Left to
itself, DeepSpeed counts micro-batches across epochs (stepping after batches 0, 2, 4, 6 of the second epoch) and
does not restore that count on resume. Each run is its own process (``bertcls.strategies.CPUDeepSpeedStrategy``,
the real ZeRO-2 engine on the CPU): DeepSpeed's globals outlive a run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml
from helpers import assert_same_tensors, fit_and_read_records, resumable_fit_args, run_bertcls_process, run_checkpoints

BATCH_SIZE, BATCHES, EPOCHS, ACCUMULATE = 8, 7, 2, 2
STEP_AFTER_BATCHES = [1, 3, 5, 6]  # of every epoch: 4 steps an epoch, 8 in all
# last.ckpt every 3 steps: at step 3, at the first epoch's end (4) and at step 6 (after batch 3 of the second
# epoch); the run killed when it reaches step 7 resumes from step 6, before the second epoch's closing step.
SAVE_EVERY, KILL_AT_STEP = 3, 7

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("deepspeed") is None,
        reason="DeepSpeed (the optional extra) is not installed: pip install 'bertcls[deepspeed]'",
    ),
    pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used to create"),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, real_words: list[str]) -> SimpleNamespace:
    """The arguments and folder of the runs, and the uninterrupted run's step counts after each batch."""
    folder = tmp_path_factory.mktemp("deepspeed-accumulation")
    strategy = {"class_path": "bertcls.strategies.CPUDeepSpeedStrategy", "init_args": {"stage": 2}}
    strategy["init_args"]["logging_batch_size_per_gpu"] = BATCH_SIZE
    (folder / "strategy.yaml").write_text(yaml.safe_dump(strategy))
    args = resumable_fit_args(
        folder, tiny_model_dir, real_words, train_rows=BATCH_SIZE * BATCHES, batch_size=BATCH_SIZE, epochs=EPOCHS,
        save_every=SAVE_EVERY,
    )  # fmt: skip
    args += ["--trainer.strategy", folder / "strategy.yaml", "--trainer.accumulate_grad_batches", ACCUMULATE]
    args += ["--trainer.callbacks+=helpers.RecordEngineSteps"]
    run = SimpleNamespace(folder=folder, args=args, env={"BERTCLS_CACHE": str(folder / "cache")})
    run.steps = fit(run, "reference")
    return run


def fit(run: SimpleNamespace, experiment: str, *extra: object, env: dict[str, str] | None = None) -> list[dict]:
    """Run ``bertcls fit`` to its end (or its kill); its step counts after each batch (``RecordEngineSteps``)."""
    return fit_and_read_records(run, experiment, "BERTCLS_TEST_STEPS_FILE", *extra, env=env)


def last_weights(run: SimpleNamespace, experiment: str) -> dict[str, torch.Tensor]:
    """The weights in the run's ``last.ckpt`` folder: ZeRO-2 keeps them whole in its model-states file."""
    states = run_checkpoints(run.folder, experiment) / "last.ckpt" / "checkpoint" / "mp_rank_00_model_states.pt"
    return torch.load(states, map_location="cpu", weights_only=False)["module"]


@pytest.mark.strategies
def test_the_engine_steps_where_lightning_counts_a_step(run: SimpleNamespace) -> None:
    expected = [step_count(epoch, batch) for epoch in range(EPOCHS) for batch in range(BATCHES)]
    assert [record["lightning"] for record in run.steps] == expected, run.steps
    assert [record["engine"] for record in run.steps] == expected, run.steps
    assert run.steps[-1]["engine"] == run.steps[-1]["lightning"] == EPOCHS * len(STEP_AFTER_BATCHES) == 8


def step_count(epoch: int, batch: int) -> int:
    """Optimizer steps taken once ``batch`` of ``epoch`` has trained."""
    return epoch * len(STEP_AFTER_BATCHES) + sum(step_batch <= batch for step_batch in STEP_AFTER_BATCHES)


@pytest.mark.strategies
def test_killed_mid_epoch_and_resumed_ends_with_the_uninterrupted_runs_weights(run: SimpleNamespace) -> None:
    kill = {"BERTCLS_TEST_SIGNAL": "SIGKILL", "BERTCLS_TEST_SIGNAL_AT_STEP": str(KILL_AT_STEP)}
    fit(run, "killed", "--trainer.callbacks+=helpers.SignalAtStep", env=kill)
    resumed = fit(run, "killed", "--ckpt_path", "last")

    assert (resumed[0]["epoch"], resumed[0]["batch"]) == (1, 4), "resumed after the step-6 save"
    assert resumed == run.steps[-len(resumed) :], "the resumed run steps where the uninterrupted one did"
    assert_same_tensors(last_weights(run, "reference"), last_weights(run, "killed"), "state_dict")


def first_gradient_norm(run: SimpleNamespace, experiment: str, *extra: object) -> float:
    """``train/grad_norm`` (before clipping) of the first optimizer step of a 2-step fit, logged every step."""
    args = [arg for arg in run.args if arg != "--trainer.callbacks+=helpers.RecordEngineSteps"]
    args += ["--trainer.max_steps", 2, "--trainer.log_every_n_steps", 1, "--experiment", experiment]
    process = run_bertcls_process(*args, *extra, cwd=run.folder, env=run.env)
    assert process.returncode == 0, process.stderr[-3000:]
    metrics = pd.read_csv(run.folder / "checkpoints" / experiment / "version_0" / "metrics.csv")
    return float(metrics["train/grad_norm"].dropna().iloc[0])


@pytest.mark.strategies
def test_the_gradients_are_those_of_every_other_strategy(run: SimpleNamespace) -> None:
    """The loss of an accumulated batch is divided by accumulate_grad_batches once: the first step's gradient norm
    under ZeRO-2 is the single-process run's (the engine dividing again would halve it)."""
    deepspeed = first_gradient_norm(run, "norm-zero2")
    single = first_gradient_norm(run, "norm-single", "--trainer.strategy", "auto")
    assert deepspeed == pytest.approx(single, rel=1e-4)


def test_lightnings_own_deepspeed_class_with_accumulation_is_refused() -> None:
    from lightning.pytorch.strategies import DeepSpeedStrategy as LightningDeepSpeedStrategy

    from bertcls.deepspeed_strategy import DeepSpeedStrategy, refuse_drifting_accumulation
    from bertcls.errors import InputError

    with pytest.raises(InputError, match=r"configs/strategy/deepspeed-zero2\.yaml"):
        refuse_drifting_accumulation(LightningDeepSpeedStrategy(stage=2), 2)
    refuse_drifting_accumulation(LightningDeepSpeedStrategy(stage=2), 1)
    refuse_drifting_accumulation(DeepSpeedStrategy(stage=2), 4)
