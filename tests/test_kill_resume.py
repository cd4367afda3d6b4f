"""SIGKILL ``bertcls fit`` at random moments, resume with ``--ckpt_path last``, and nothing is corrupt or lost.

Each seed picks when to kill (and how many times: a resumed run can be killed again). ``last.ckpt`` is written
after every optimizer step, so kills land during checkpoint writes too (about 4 in 10 did, over 27 seeds). After
each kill, every checkpoint in the run folder loads whole and ``last.ckpt`` is at least as new as the last save the
killed process had finished; the final resume ends with the uninterrupted run's checkpoints (``last.ckpt`` and the
best one, which needs every validation), bitwise, and no staging file left.

The default suite runs ``DEFAULT_SEEDS`` seeds. The long run is marked ``faults`` and left out by default:
``python -m pytest -m faults`` (``.ci/faults``, nightly) runs ``$BERTCLS_FAULT_SEEDS`` (25 by default) other seeds.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import (
    assert_same_training_state,
    last_checkpoint,
    resumable_fit_args,
    run_bertcls_process,
    run_checkpoints,
    start_bertcls_process,
)

from bertcls.callbacks.last_checkpoint import LastCheckpoint

TRAIN_ROWS, BATCH_SIZE, EPOCHS = 150, 16, 2  # 10 steps per epoch (the last batch of 6 rows), 20 in all
STEPS = EPOCHS * 10
DEFAULT_SEEDS = 2
FAULT_SEEDS = int(os.environ.get("BERTCLS_FAULT_SEEDS", "25"))
SEEDS = [
    *range(DEFAULT_SEEDS),
    *(pytest.param(seed, marks=pytest.mark.faults) for seed in range(DEFAULT_SEEDS, DEFAULT_SEEDS + FAULT_SEEDS)),
]
STAGING_FILE = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)\.partial")  # bertcls.atomic_files.atomic_write's


class JournaledLastCheckpoint(LastCheckpoint):
    """``LastCheckpoint`` that, once each save is complete (renamed into place), appends ``<global step> <time>``
    to ``$BERTCLS_TEST_JOURNAL``: a process killed later is known to have written at least that checkpoint."""

    def save(self, trainer: L.Trainer) -> Path:
        path = super().save(trainer)
        with open(os.environ["BERTCLS_TEST_JOURNAL"], "a") as journal:
            journal.write(f"{trainer.global_step} {time.time()}\n")
        return path


def read_journal(path: Path) -> list[tuple[int, float]]:
    """The (global step, time) of each save recorded so far; a line still being written is left out."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[:-1]  # the last piece is empty, or a line not yet complete
    return [(int(step), float(when)) for step, when in (line.split() for line in lines)]


@dataclass
class Reference:
    """The uninterrupted run every killed and resumed run must end like, and how to start one."""

    folder: Path
    args: list[object]
    env: dict[str, str]
    save_interval: float  # mean seconds between two saves of last.ckpt, process start-up excluded


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, real_words: list[str]) -> Reference:
    folder = tmp_path_factory.mktemp("kill-resume")
    args = resumable_fit_args(
        folder, tiny_model_dir, real_words, train_rows=TRAIN_ROWS, batch_size=BATCH_SIZE, epochs=EPOCHS,
        save_every=1, last_checkpoint_class=f"{__name__}.JournaledLastCheckpoint",
    )  # fmt: skip
    env = {"BERTCLS_CACHE": str(folder / "cache"), "BERTCLS_TEST_JOURNAL": str(folder / "reference.journal")}
    done = run_bertcls_process(*args, "--experiment", "reference", cwd=folder, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    saves = read_journal(folder / "reference.journal")
    assert saves[-1][0] == STEPS
    return Reference(folder, args, env, (saves[-1][1] - saves[0][1]) / (len(saves) - 1))


def kill_after_save(process: subprocess.Popen, journal: Path, skip: int, step: int, delay: float) -> int:
    """SIGKILL ``process`` ``delay`` seconds after it has saved ``step`` or a later one (its saves are the journal's
    lines after the first ``skip``); its exit status: -9, or that of its own end if it got there first."""
    deadline = time.monotonic() + 300
    while process.poll() is None and all(saved < step for saved, _ in read_journal(journal)[skip:]):
        assert time.monotonic() < deadline, f"no save of step {step} in 300 s"
        time.sleep(0.005)
    time.sleep(delay)
    process.kill()  # nothing happens if it has already ended
    return process.wait()


def assert_checkpoints_load(checkpoints: Path, killed_pid: int | None) -> list[str]:
    """Every ``*.ckpt`` file loads whole; the only other files are staging files of the killed process, whose
    targets (the checkpoints it was writing when killed) are returned."""
    names = sorted(path.name for path in checkpoints.iterdir())
    assert "last.ckpt" in names
    interrupted = []
    for name in names:
        staging = STAGING_FILE.fullmatch(name)
        if staging:
            assert int(staging["pid"]) == killed_pid, f"{name}: a staging file no writer cleared"
            interrupted.append(staging["target"])
        else:
            assert name.endswith(".ckpt"), name
            torch.load(checkpoints / name, map_location="cpu", weights_only=True)
    return interrupted


@pytest.mark.parametrize("seed", SEEDS)
def test_a_run_killed_at_random_moments_resumes_without_losing_or_corrupting_a_checkpoint(
    reference: Reference, seed: int
) -> None:
    rng = random.Random(seed)
    experiment = f"seed-{seed}"
    folder, log = reference.folder, reference.folder / f"{experiment}.log"
    journal = folder / f"{experiment}.journal"
    checkpoints = run_checkpoints(folder, experiment)
    args, env = [*reference.args, "--experiment", experiment], reference.env | {"BERTCLS_TEST_JOURNAL": str(journal)}
    resume: list[str] = []  # the first run starts afresh; the others resume from last.ckpt
    for _ in range(rng.randint(1, 2)):
        saved = read_journal(journal)
        start = saved[-1][0] if saved else 0
        # Kill within 1.5 save intervals of a save at a random step: during training, a checkpoint write, the
        # validation at an epoch's end, or, after the last save, the end of fit (a run resumed from the last step
        # saves that step again at the end of its epoch).
        step = rng.randint(min(start + 1, STEPS), STEPS)
        delay = rng.uniform(0, 1.5 * reference.save_interval)
        process = start_bertcls_process(*args, *resume, cwd=folder, log=log, env=env)
        status = kill_after_save(process, journal, len(saved), step, delay)
        assert status in (-9, 0), log.read_text()[-3000:]
        if status == 0:
            break  # the run ended before the kill: the last moment drawn was after its end
        written = read_journal(journal)[len(saved) :]
        assert written, "killed before its first save"
        interrupted = assert_checkpoints_load(checkpoints, killed_pid=process.pid)
        resumes_from = last_checkpoint(folder, experiment)["global_step"]
        assert resumes_from >= written[-1][0], "last.ckpt is older than a save the killed process had completed"
        # Shown with -rP: where the kills landed (a write of `interrupted`, or none).
        print(f"killed {delay:.3f} s after saving step {step}; writing: {interrupted}; resumes from {resumes_from}")
        resume = ["--ckpt_path", "last"]
    else:
        done = run_bertcls_process(*args, *resume, cwd=folder, env=env)
        assert done.returncode == 0, done.stderr[-3000:]

    assert_checkpoints_load(checkpoints, killed_pid=None)  # the resumed run's writes cleared the staging files
    # The same checkpoints as the uninterrupted run (last.ckpt and the best one, by its validations), bitwise.
    expected = run_checkpoints(folder, "reference")
    assert sorted(path.name for path in checkpoints.iterdir()) == sorted(path.name for path in expected.iterdir())
    for path in expected.iterdir():
        reloaded = torch.load(checkpoints / path.name, map_location="cpu", weights_only=True)
        assert_same_training_state(torch.load(path, map_location="cpu", weights_only=True), reloaded)
