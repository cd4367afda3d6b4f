"""What a run ran on: the code's git commit, package versions and hardware (saved and logged with the config)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning as L
import torch

PACKAGES = ("bertcls", "torch", "lightning", "transformers", "tokenizers", "torchmetrics", "datasets", "wandb")
OPTIONAL_PACKAGES = ("deepspeed",)


def run_info(trainer: L.Trainer) -> dict[str, Any]:
    return {"code": code_version(), "packages": package_versions(), "hardware": hardware(trainer)}


def code_version(source: Path | None = None) -> dict[str, Any]:
    """The git commit of the bertcls source tree and whether it has uncommitted changes (None when not in git)."""
    source = source or Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    changes = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(changes), "git_branch": git("rev-parse", "--abbrev-ref", "HEAD")}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES + OPTIONAL_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        versions["cudnn"] = str(torch.backends.cudnn.version())
        versions["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    return versions


def hardware(trainer: L.Trainer) -> dict[str, Any]:
    """This node's CPUs and accelerators, and the run's shape (nodes, devices, world size, precision)."""
    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "accelerator": type(trainer.accelerator).__name__,
        "strategy": type(trainer.strategy).__name__,
        "precision": trainer.precision,
        "num_nodes": trainer.num_nodes,
        "devices_per_node": trainer.num_devices,
        "world_size": trainer.world_size,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    if torch.cuda.is_available():
        properties = [torch.cuda.get_device_properties(index) for index in range(torch.cuda.device_count())]
        info["gpus"] = [f"{device.name} ({device.total_memory / 2**30:.0f} GiB)" for device in properties]
    return info
