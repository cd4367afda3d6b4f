"""Resume loses nothing: a run SIGKILLed mid-epoch and resumed from ``last.ckpt`` ends with exactly the
weights and optimizer state of an uninterrupted run (same seed, CPU), and checkpoint writes are atomic."""

from __future__ import annotations

import errno
import io
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import (
    REPO_ROOT,
    assert_resume_ends_as_the_reference,
    assert_same_training_state,
    last_checkpoint,
    resumable_fit_args,
    run_bertcls_process,
    run_checkpoints,
    run_cli,
)
from jsonargparse import Namespace

from bertcls.checkpoint_io import AtomicCheckpointIO
from bertcls.cli import add_atomic_checkpoint_io

TRAIN_ROWS, BATCH_SIZE, SAVE_EVERY = 300, 16, 5  # 19 steps per epoch; last.ckpt at steps 5, 10, 15, 19, 20, ...


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, real_words: list[str]) -> dict:
    folder = tmp_path_factory.mktemp("resume-exact")
    args = resumable_fit_args(
        folder,
        tiny_model_dir,
        real_words,
        train_rows=TRAIN_ROWS,
        batch_size=BATCH_SIZE,
        epochs=2,
        save_every=SAVE_EVERY,
    )
    env = {"BERTCLS_CACHE": str(folder / "cache")}
    reference = run_bertcls_process(*args, "--experiment", "reference", cwd=folder, env=env)
    assert reference.returncode == 0, reference.stderr[-3000:]
    return {"folder": folder, "args": args, "env": env}


@pytest.mark.parametrize(
    ("kill_at_step", "resumes_from_step"),
    [(13, 10), (22, 20)],  # mid first epoch; mid second epoch, after the end-of-epoch checkpoint
)
def test_killed_and_resumed_run_ends_with_the_uninterrupted_runs_weights(
    setup: dict, kill_at_step: int, resumes_from_step: int
) -> None:
    folder, args, env = setup["folder"], setup["args"], setup["env"]
    experiment = f"killed-at-{kill_at_step}"
    killer = ["--trainer.callbacks+=helpers.SignalAtStep", "--experiment", experiment]
    kill = {"BERTCLS_TEST_SIGNAL": "SIGKILL", "BERTCLS_TEST_SIGNAL_AT_STEP": str(kill_at_step)}
    killed = run_bertcls_process(*args, *killer, cwd=folder, env=env | kill)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert last_checkpoint(folder, experiment)["global_step"] == resumes_from_step

    resumed = run_bertcls_process(*args, "--experiment", experiment, "--ckpt_path", "last", cwd=folder, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected, actual = last_checkpoint(folder, "reference"), last_checkpoint(folder, experiment)
    assert expected["global_step"] == 2 * 19
    assert_same_training_state(expected, actual)


@pytest.mark.parametrize(
    ("signal_at_step", "saved_at_step"),
    [(7, 8), (18, 19)],  # mid-epoch; during the epoch's last batch (step 19): saved after its validation
)
def test_sigusr1_saves_at_the_next_step_stops_cleanly_and_the_resumed_run_matches(
    setup: dict, signal_at_step: int, saved_at_step: int
) -> None:
    """Preemption outside SLURM: the checkpoint is written after the signalled step, fit exits with status 0
    (no requeue: no SLURM job), and resuming ends exactly where the uninterrupted run ends, having validated
    every epoch (the same best checkpoint)."""
    folder, args, env = setup["folder"], setup["args"], setup["env"]
    experiment = f"signalled-{signal_at_step}"
    signaller = ["--trainer.callbacks+=helpers.SignalAtStep", "--experiment", experiment]
    signal_env = env | {"BERTCLS_TEST_SIGNAL_AT_STEP": str(signal_at_step)}
    stopped = run_bertcls_process(*args, *signaller, cwd=folder, env=signal_env)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert f"SIGUSR1: saved checkpoints/{experiment}/version_0/checkpoints/last.ckpt at step {saved_at_step}" in (
        stopped.stderr + stopped.stdout
    )
    assert last_checkpoint(folder, experiment)["global_step"] == saved_at_step

    assert_resume_ends_as_the_reference(args, folder, env, experiment)
    best = sorted(path.name for path in run_checkpoints(folder, experiment).glob("best-*.ckpt"))
    assert best == sorted(path.name for path in run_checkpoints(folder, "reference").glob("best-*.ckpt"))
    validated = [validated_epochs(run_checkpoints(folder, name).parent) for name in ("reference", experiment)]
    assert validated[0] == validated[1] == [0, 1]


def validated_epochs(run: Path) -> list[int]:
    """The epochs whose validation accuracy the run's metrics.csv holds."""
    metrics = pd.read_csv(run / "metrics.csv")
    return sorted(metrics.dropna(subset=["val/accuracy"])["epoch"].astype(int).unique().tolist())


@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_sigterm_and_ctrl_c_save_before_stopping_and_the_resumed_run_matches(
    setup: dict, name: str, status: int
) -> None:
    """kill / scancel (SIGTERM) and Ctrl-C (SIGINT): last.ckpt after the signalled step, exit 128 + the signal,
    and `--ckpt_path last` ends exactly where the uninterrupted run ends."""
    folder, args, env = setup["folder"], setup["args"], setup["env"]
    experiment = f"stopped-{name.lower()}"
    signaller = ["--trainer.callbacks+=helpers.SignalAtStep", "--experiment", experiment]
    signal_env = env | {"BERTCLS_TEST_SIGNAL_AT_STEP": "7", "BERTCLS_TEST_SIGNAL": name}
    stopped = run_bertcls_process(*args, *signaller, cwd=folder, env=signal_env)
    assert stopped.returncode == status, stopped.stderr[-3000:]
    assert f"{name}: saved" in stopped.stderr + stopped.stdout
    assert last_checkpoint(folder, experiment)["global_step"] == 8

    assert_resume_ends_as_the_reference(args, folder, env, experiment)


WRITER = """
import sys, torch
from bertcls.checkpoint_io import atomic_torch_save
version = 0
while True:
    version += 1
    atomic_torch_save({"version": version, "weights": torch.full((4_000_000,), float(version))}, sys.argv[1])
    print(version, flush=True)
"""


def test_a_kill_during_checkpoint_writes_never_leaves_a_corrupt_file(tmp_path: Path) -> None:
    """SIGKILL a process that rewrites a 16 MB checkpoint in a loop, at many moments: the file always loads,
    whole, as one of the versions written, and the next save clears the killed writer's staging file."""
    target = tmp_path / "last.ckpt"
    for attempt in range(8):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None
        writer.stdout.readline()  # one complete version exists
        time.sleep(0.05 + 0.07 * attempt)
        writer.kill()
        writer.wait()
        checkpoint = torch.load(target, weights_only=True)
        assert torch.equal(checkpoint["weights"], torch.full((4_000_000,), float(checkpoint["version"])))
    from bertcls.checkpoint_io import atomic_torch_save

    atomic_torch_save({"version": 0}, target)
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"]


class FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: the write that passes the limit fails with ENOSPC."""

    room = 0

    def write(self, data: bytes) -> int:
        FullDisk.room -= len(data)
        if FullDisk.room < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_a_full_disk_during_a_checkpoint_write_leaves_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint writer of every run (AtomicCheckpointIO) meets ENOSPC halfway through a 16 MB checkpoint:
    the error says so (torch.save alone says "enforce fail ... unexpected pos"), last.ckpt is still the previous,
    whole checkpoint, and no staging file is left."""
    import bertcls.atomic_files

    target = tmp_path / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"global_step": 100, "weights": torch.full((4_000_000,), 1.0)}, target)
    FullDisk.room = 8_000_000
    monkeypatch.setattr(bertcls.atomic_files, "open", lambda path, mode: FullDisk(path, "w"), raising=False)
    with pytest.raises(OSError, match=f"No space left on device while writing {target}: any previous last.ckpt"):
        writer.save_checkpoint({"global_step": 200, "weights": torch.full((4_000_000,), 2.0)}, target)
    checkpoint = torch.load(target, weights_only=True)
    assert checkpoint["global_step"] == 100 and torch.equal(checkpoint["weights"], torch.full((4_000_000,), 1.0))
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"]


def test_every_run_writes_its_checkpoints_atomically_unless_its_config_names_another_writer(
    tmp_path: Path, tiny_model_dir: Path, real_words: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No trainer config names AtomicCheckpointIO; the CLI adds it, so every checkpoint of a quickstart run goes
    through it. A plugin given by name stays beside it; a config's own CheckpointIO replaces it."""
    written: list[str] = []
    save = AtomicCheckpointIO.save_checkpoint

    def recorded(self: AtomicCheckpointIO, checkpoint: dict, path: str, **options: object) -> None:
        written.append(Path(path).name)
        save(self, checkpoint, path, **options)

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", recorded)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BERTCLS_CACHE", str(tmp_path / "cache"))
    args = resumable_fit_args(
        tmp_path, tiny_model_dir, real_words, train_rows=64, batch_size=16, epochs=1, save_every=2
    )
    assert run_cli(*args) is None
    assert "last.ckpt" in written and any(name.startswith("best-") for name in written), written

    trainer = Namespace(plugins=None)
    add_atomic_checkpoint_io(trainer)
    assert [entry.class_path for entry in trainer.plugins] == ["bertcls.checkpoint_io.AtomicCheckpointIO"]
    trainer = Namespace(plugins="bf16-mixed")
    add_atomic_checkpoint_io(trainer)
    assert trainer.plugins[0] == "bf16-mixed" and trainer.plugins[1].class_path.endswith("AtomicCheckpointIO")
    own = Namespace(class_path="lightning.pytorch.plugins.io.TorchCheckpointIO", init_args=Namespace())
    trainer = Namespace(plugins=[own])
    add_atomic_checkpoint_io(trainer)
    assert trainer.plugins == [own]
