"""Decisions taken before a run starts (bertcls/run_folder.py): which ``last.ckpt`` ``--ckpt_path last`` resumes, and
whether a SLURM job's task count matches the ranks the trainer expects."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from helpers import CONFIGS, run_cli
from jsonargparse import Namespace
from lightning.pytorch.accelerators import CUDAAccelerator

from bertcls.errors import InputError
from bertcls.run_folder import check_slurm_tasks, resolve_resume


# --- --ckpt_path last ----------------------------------------------------------------------------------------
def linked_checkpoint(run_folder: Path, slot: str, link_time: float, slot_time: float) -> None:
    """``checkpoints/last.ckpt``, a link to a slot folder, as LastCheckpoint leaves a DeepSpeed checkpoint."""
    checkpoints = run_folder / "checkpoints"
    (checkpoints / slot / "checkpoint").mkdir(parents=True)
    (checkpoints / slot / "latest").write_text("checkpoint")
    (checkpoints / "last.ckpt").symlink_to(slot)
    os.utime(checkpoints / slot, (slot_time, slot_time))
    os.utime(checkpoints / "last.ckpt", (link_time, link_time), follow_symlinks=False)


def test_ckpt_path_last_takes_the_newest_link_not_its_target_folders_time(tmp_path: Path) -> None:
    """DeepSpeed overwrites the files of a slot folder it has written before, which leaves the folder's time as it
    was: the link, made anew at every save, tells when the checkpoint was written."""
    now = time.time()
    linked_checkpoint(tmp_path / "exp" / "version_0", "last-a.ckpt", link_time=now - 600, slot_time=now - 60)
    linked_checkpoint(tmp_path / "exp" / "version_1", "last-b.ckpt", link_time=now - 30, slot_time=now - 3600)
    config = Namespace(experiment="exp", ckpt_path="last")
    logger_args = Namespace(save_dir=str(tmp_path), version=None)

    resolve_resume(config, logger_args)

    assert logger_args.version == "version_1"
    assert config.ckpt_path == str(tmp_path / "exp" / "version_1" / "checkpoints" / "last.ckpt")


# --- the SLURM task count ------------------------------------------------------------------------------------
@pytest.fixture
def visible_gpus(monkeypatch: pytest.MonkeyPatch):
    """Pretend this task sees N CUDA GPUs (this machine has none)."""

    def see(count: int) -> None:
        monkeypatch.setattr(CUDAAccelerator, "auto_device_count", staticmethod(lambda: count))

    return see


# trainer.devices as jsonargparse hands it over from the command line: the slurm/ scripts pass
# --trainer.devices "$SLURM_NTASKS_PER_NODE", which arrives as the string '4'.
@pytest.mark.parametrize(
    ("devices", "accelerator", "num_nodes", "tasks"),
    [
        ("2", "cpu", 1, 2),
        (2, "cpu", 1, 2),
        ("4", "cpu", 2, 8),
        ("auto", "cpu", 1, 1),
        ("auto", "auto", 1, 1),  # no GPU here: Lightning's auto is the CPU, one process
        ("4", "gpu", 1, 4),
        ("0,1", "gpu", 1, 2),
        ([0, 1], "cuda", 2, 4),
        ("auto", "gpu", 1, 4),
        ("-1", "gpu", 1, 4),
    ],
)
def test_a_task_count_that_matches_the_trainers_ranks_passes(
    monkeypatch: pytest.MonkeyPatch, visible_gpus, devices: object, accelerator: str, num_nodes: int, tasks: int
) -> None:
    visible_gpus(4)
    monkeypatch.setenv("SLURM_NTASKS", str(tasks))
    check_slurm_tasks(devices, num_nodes, accelerator)


@pytest.mark.parametrize(
    ("devices", "accelerator", "num_nodes", "tasks", "expected"),
    [
        ("1", "cpu", 1, 2, "1 node(s) x 1 device(s)"),
        ("4", "cpu", 1, 2, "1 node(s) x 4 device(s)"),
        ("4", "gpu", 2, 4, "2 node(s) x 4 device(s)"),
        ("auto", "cpu", 1, 4, "1 node(s) x 1 device(s)"),  # on a CPU, auto is one process
        ("auto", "gpu", 1, 8, "1 node(s) x 4 device(s)"),  # on GPUs, every visible one
        ("0,1", "gpu", 1, 4, "1 node(s) x 2 device(s)"),
    ],
)
def test_a_task_count_that_differs_from_the_trainers_ranks_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    visible_gpus,
    devices: object,
    accelerator: str,
    num_nodes: int,
    tasks: int,
    expected: str,
) -> None:
    """Without the check, each of the job's tasks silently trains alone in the same run folder."""
    visible_gpus(4)
    monkeypatch.setenv("SLURM_NTASKS", str(tasks))
    with pytest.raises(InputError, match=re.escape(f"has {tasks} tasks but the trainer expects {expected}")):
        check_slurm_tasks(devices, num_nodes, accelerator)


def test_a_task_that_sees_fewer_gpus_than_devices_is_told_about_gpu_binding(
    monkeypatch: pytest.MonkeyPatch, visible_gpus
) -> None:
    """A cluster that binds one GPU to each task: Lightning would fail on 'You requested gpu: [0, 1, 2, 3]'."""
    visible_gpus(1)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    with pytest.raises(InputError, match=r"sees only 1 GPU\(s\) \(CUDA_VISIBLE_DEVICES=2\).*--gpu-bind=none"):
        check_slurm_tasks("4", 1, "gpu")


def test_fit_under_srun_with_the_scripts_flags_refuses_a_mismatch_before_training(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The flags exactly as slurm/train.sbatch writes them, in a 2-task job whose script was asked for 4 devices."""
    for name, value in {"SLURM_NTASKS": "2", "SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "bertcls"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    exit_ = run_cli(
        "fit", "--config", CONFIGS / "quickstart.yaml",
        "--trainer.accelerator", "cpu", "--trainer.num_nodes", "1", "--trainer.devices", "4",
    )  # fmt: skip
    assert isinstance(exit_, SystemExit) and isinstance(exit_.code, str), exit_
    assert exit_.code.startswith("bertcls: error: this SLURM job has 2 tasks but the trainer expects 1 node(s) x 4")
    assert not (tmp_path / "checkpoints").exists()
