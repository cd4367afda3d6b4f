"""Which run folder, ``<save_dir>/<experiment>/<version>/``, a command logs into; decided before anything starts.

Every logger of a run (CSV, W&B, TensorBoard) gets the same folder, and so do the checkpoints:

- ``fit`` in a SLURM job: ``slurm-<job id>``, so that a requeued job continues its first run's folder;
- ``fit --ckpt_path last``: the folder of the experiment's newest ``last.ckpt``;
- ``fit`` into a named version that holds a ``last.ckpt``: resumes from it;
- ``test``/``validate``/``predict`` of a checkpoint inside a run folder, with no other ``--experiment`` named and
  bertcls' appending CSV logger first: that folder (reports and metrics go next to the checkpoint, and W&B
  continues the training run);
- otherwise the next free ``version_N``.
"""

from __future__ import annotations

import os
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.accelerators import Accelerator, AcceleratorRegistry, CPUAccelerator, CUDAAccelerator
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info

from bertcls.callbacks.preemption import slurm_job_id
from bertcls.errors import InputError
from bertcls.lightning_internals import auto_accelerator_name, parse_gpu_devices

DEFAULT_EXPERIMENT = "default"
APPENDING_CSV_LOGGER = "bertcls.loggers.CSVLogger"


def logger_entries(logger_config: object) -> list[Namespace]:
    """Each configured logger's ``class_path`` and ``init_args`` (``trainer.logger`` is one, a list, or a bool)."""
    entries = logger_config if isinstance(logger_config, list) else [logger_config]
    return [entry for entry in entries if getattr(entry, "init_args", None) is not None]


def assign_run_folder(config: Namespace, subcommand: str) -> None:
    """Set the experiment, version and save folder of every logger, and the checkpoint to resume from."""
    entries = [entry for entry in logger_entries(config.trainer.logger) if hasattr(entry.init_args, "version")]
    if not entries:
        return
    loggers = [entry.init_args for entry in entries]
    primary = loggers[0]
    if subcommand == "fit":
        if primary.version is None and SLURMEnvironment.detect():
            primary.version = f"slurm-{slurm_job_id()}"
        if config.ckpt_path == "last":
            resolve_resume(config, primary)
        elif config.ckpt_path is None:
            continue_named_run(config, primary)
    elif primary.version is None and config.ckpt_path and entries[0].class_path == APPENDING_CSV_LOGGER:
        use_checkpoint_folder(config, primary)  # another logger might overwrite the training run's files
    if primary.version is None:
        primary.version = f"version_{LightningCSVLogger(primary.save_dir, config.experiment).version}"
    for args in loggers:
        for key in ("save_dir", "version"):
            if hasattr(args, key):
                setattr(args, key, getattr(primary, key))
        if hasattr(args, "name"):
            args.name = config.experiment


def run_folder(save_dir: str, experiment: str, version: str | int) -> Path:
    return Path(save_dir) / experiment / (version if isinstance(version, str) else f"version_{version}")


def check_slurm_tasks(devices: object, num_nodes: int, accelerator: object = "auto") -> None:
    """Under ``srun`` each task is one rank: the trainer must expect exactly as many, or every task trains
    alone, in the same folder, and Lightning says nothing."""
    tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    kind = accelerator_type(accelerator)
    per_node = devices_per_node(devices, kind)
    if per_node is None:
        return
    if per_node * num_nodes != tasks:
        raise InputError(
            f"this SLURM job has {tasks} tasks but the trainer expects {num_nodes} node(s) x {per_node} device(s) "
            f"(--trainer.devices {devices}). Start one task per device (--ntasks-per-node = devices) or pass "
            "--trainer.devices and --trainer.num_nodes after --config (the slurm/ scripts do)."
        )
    visible = CUDAAccelerator.auto_device_count()
    if kind is CUDAAccelerator and 0 < visible < per_node:
        raise InputError(
            f"--trainer.devices {devices}: this SLURM task sees only {visible} GPU(s) "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}): the cluster binds GPUs to tasks. "
            "Start the tasks with `srun --gpu-bind=none` (the slurm/ scripts do), so that each sees the node's GPUs."
        )


def accelerator_type(accelerator: object) -> type[Accelerator] | None:
    """The Lightning accelerator class ``trainer.accelerator`` stands for; None for an accelerator object."""
    if not isinstance(accelerator, str):
        return None
    if accelerator == "auto":
        accelerator = auto_accelerator_name()
    name = "cuda" if accelerator == "gpu" else accelerator
    return type(AcceleratorRegistry.get(name)) if name in AcceleratorRegistry else None


def devices_per_node(devices: object, kind: type[Accelerator] | None) -> int | None:
    """How many processes the trainer starts on each node, counted as Lightning counts ``trainer.devices``: a
    number, also as a string (``'4'``: what the command line gives), GPU indices (``[0, 1]``, ``'0,1'``), or all
    that are visible (``auto``, ``-1``; ``auto`` is 1 on a CPU). None where Lightning will refuse the value."""
    if devices == "auto":
        return kind.auto_device_count() if kind else None
    try:
        if kind is CPUAccelerator:
            return CPUAccelerator.parse_devices(devices)
        parsed = parse_gpu_devices(devices)
    except (TypeError, ValueError):
        return None
    if isinstance(parsed, list):
        return len(parsed)
    if parsed == -1:
        return kind.auto_device_count() if kind else None
    return parsed if isinstance(parsed, int) else None


def continue_named_run(config: Namespace, logger_args: Namespace) -> None:
    """A run given an explicit version (or a SLURM job's) resumes from that folder's ``last.ckpt``, if any.

    Starting afresh there would mix two runs' checkpoints and metrics in one folder.
    """
    if logger_args.version is None:
        return
    last = run_folder(logger_args.save_dir, config.experiment, logger_args.version) / "checkpoints" / "last.ckpt"
    if last.exists():  # a file, or a folder (DeepSpeed checkpoints)
        rank_zero_info(f"Resuming from {last} (the run folder already holds a checkpoint).")
        config.ckpt_path = str(last)


def resolve_resume(config: Namespace, logger_args: Namespace) -> None:
    """``--ckpt_path last``: find the newest ``last.ckpt`` of this experiment and log into its version.

    Lightning alone would look only in a new, empty version folder and silently start from scratch.
    """
    experiment = Path(logger_args.save_dir) / config.experiment
    # lstat: a folder checkpoint's last.ckpt is a link, made anew to each slot folder just written; the folder's
    # own time changes only when an entry is added or removed, not when DeepSpeed overwrites its files.
    candidates = sorted(experiment.glob("*/checkpoints/last.ckpt"), key=lambda path: path.lstat().st_mtime)
    if not candidates:
        raise InputError(
            f"--ckpt_path last: no last.ckpt under {experiment}/*/checkpoints/ (experiment '{config.experiment}'), "
            "so there is no run to resume. Check --experiment and the logger's save_dir, start a new run without "
            "--ckpt_path, or give the checkpoint file's path."
        )
    latest = candidates[-1]
    config.ckpt_path = str(latest)
    logger_args.version = latest.parent.parent.name


def use_checkpoint_folder(config: Namespace, logger_args: Namespace) -> None:
    """Evaluate or predict into the run folder that holds the checkpoint (``<folder>/checkpoints/<file>``)."""
    checkpoint = Path(config.ckpt_path).absolute()
    folder = checkpoint.parent.parent
    if checkpoint.parent.name != "checkpoints" or not (folder / "config.yaml").is_file():
        return  # not a bertcls run folder: a new version folder, as usual
    if config.experiment not in (DEFAULT_EXPERIMENT, folder.parent.name):
        return  # the user named another experiment: a new version folder there
    logger_args.save_dir = str(folder.parent.parent)
    config.experiment = folder.parent.name
    logger_args.version = folder.name
    rank_zero_info(f"Logging into the checkpoint's run folder {folder}.")
