"""SIGTERM (``kill``, ``scancel``, a time limit without a grace signal) where Lightning's own handler would end fit
without saving: at a micro-batch that is no optimizer-step boundary, and during validation. ``Preemption`` owns
SIGTERM for the whole fit, saves ``last.ckpt`` at the next step boundary (or after the epoch's validation), exits
with 143, and the resumed run ends exactly where the uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_resume_ends_as_the_reference, last_checkpoint, resumable_fit_args, run_bertcls_process

# 19 batches an epoch; accumulating 4 makes 5 optimizer steps (after batches 4, 8, 12, 16 and the last, partial
# accumulation), 10 in all. last.ckpt only at the end of each epoch (step 5, 10) and on a signal.
TRAIN_ROWS, BATCH_SIZE, ACCUMULATE, SAVE_EVERY = 300, 16, 4, 1000


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, real_words: list[str]) -> dict:
    folder = tmp_path_factory.mktemp("sigterm")
    sizes = {"train_rows": TRAIN_ROWS, "batch_size": BATCH_SIZE, "epochs": 2, "save_every": SAVE_EVERY}
    args = resumable_fit_args(folder, tiny_model_dir, real_words, **sizes)
    args += ["--trainer.accumulate_grad_batches", ACCUMULATE]
    env = {"BERTCLS_CACHE": str(folder / "cache")}
    reference = run_bertcls_process(*args, "--experiment", "reference", cwd=folder, env=env)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert last_checkpoint(folder, "reference")["global_step"] == 10
    return {"folder": folder, "args": args, "env": env}


def stop_and_resume(setup: dict, experiment: str, signaller: str, signal_env: dict[str, str], saved_at: int) -> None:
    """SIGTERM the run as ``signaller`` does: saved at step ``saved_at``, exit 143; then resume and compare."""
    folder, args, env = setup["folder"], setup["args"], setup["env"]
    stopped = run_bertcls_process(
        *args, f"--trainer.callbacks+=helpers.{signaller}", "--experiment", experiment, cwd=folder,
        env=env | {"BERTCLS_TEST_SIGNAL": "SIGTERM"} | signal_env,
    )  # fmt: skip
    output = stopped.stderr + stopped.stdout
    assert stopped.returncode == 143, output[-3000:]
    assert "SIGTERMException" not in output and "Traceback" not in output
    assert f"SIGTERM: saved checkpoints/{experiment}/version_0/checkpoints/last.ckpt at step {saved_at}" in output
    assert last_checkpoint(folder, experiment)["global_step"] == saved_at

    assert_resume_ends_as_the_reference(args, folder, env, experiment)


def test_sigterm_between_step_boundaries_saves_at_the_next_one(setup: dict) -> None:
    """Sent before micro-batch 1 of the 4 that make step 3 (batch 9): saved once that step is taken."""
    stop_and_resume(setup, "mid-accumulation", "SignalAtStep", {"BERTCLS_TEST_SIGNAL_AT_STEP": "2"}, saved_at=3)


def test_sigterm_during_validation_saves_after_it(setup: dict) -> None:
    """Sent during epoch 0's validation: the validation finishes, then the end-of-epoch state (step 5) is saved."""
    stop_and_resume(setup, "in-validation", "SignalInValidation", {"BERTCLS_TEST_SIGNAL_IN_EPOCH": "0"}, saved_at=5)
