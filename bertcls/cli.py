"""The ``bertcls`` command: ``LightningCLI`` with bertcls' model, data module and defaults.

Subcommands are Lightning's: ``fit``, ``validate``, ``test``, ``predict``; configuration comes from
YAML files under ``configs/`` (``--config`` may be given several times; later files override earlier
ones) and from ``--section.key value`` flags.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info

from bertcls.callbacks import PredictionWriter, RunSummary
from bertcls.callbacks.preemption import slurm_job_id
from bertcls.data.datamodule import ClassificationDataModule
from bertcls.data.encoding import default_cache_dir
from bertcls.errors import DataError, InputError
from bertcls.model.bundled_tokenizer import restore_bundled_tokenizer
from bertcls.model.module import BertClassifier


class SaveConfigToRunFolder(SaveConfigCallback):
    """Save the resolved config as ``config.yaml`` in the run's log folder, and nowhere else.

    Without a logger Lightning would write it into the working directory, over any file of that name.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.logger is not None:
            super().setup(trainer, pl_module, stage)


class BertClsCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment",
            default="default",
            help="Run name: outputs go to <logger save_dir>/<experiment>/<version>/ (it sets the logger's name).",
        )
        # The tokenizer must be the encoder's, and a model restored from a checkpoint brings its labels.
        parser.link_arguments("model.model_name", "data.tokenizer", apply_on="parse")
        parser.link_arguments("model.label_names", "data.label_names", apply_on="parse")
        # Always present, so `bertcls predict` writes its results (section `predictions:` in configs).
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        logger_args = getattr(config.trainer.logger, "init_args", None)
        if logger_args is not None and hasattr(logger_args, "name"):
            logger_args.name = config.experiment
        # One task for both: a checkpoint's (restored into model.task) wins over the data config's.
        config.model.task = config.model.task or config.data.task
        config.data.task = config.model.task
        in_slurm_job = SLURMEnvironment.detect()
        if in_slurm_job:
            check_slurm_tasks(config.trainer.devices, config.trainer.num_nodes)
        if self.subcommand == "fit" and logger_args is not None and hasattr(logger_args, "version"):
            if logger_args.version is None and in_slurm_job:
                # A requeued job must log into, and resume from, the folder of its first run.
                logger_args.version = f"slurm-{slurm_job_id()}"
            if config.ckpt_path == "last":
                resolve_resume(config, logger_args)
            elif config.ckpt_path is None:
                continue_named_run(config, logger_args)
        if config.ckpt_path and Path(config.ckpt_path).is_file():
            # The checkpoint's own tokenizer: the training run's model folder or hub name may be gone.
            cache_root = Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()
            bundled = restore_bundled_tokenizer(config.ckpt_path, cache_root)
            if bundled is not None:
                config.data.tokenizer = str(bundled)

    def after_fit(self) -> None:
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunSummary):
                callback.print_summary(self.trainer)


def check_slurm_tasks(devices: object, num_nodes: int) -> None:
    """Under ``srun`` each task is one rank: the trainer must expect exactly as many, or every task trains
    alone, in the same folder, and Lightning says nothing."""
    tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    per_node = len(devices) if isinstance(devices, list) else devices
    if isinstance(per_node, int) and per_node * num_nodes != tasks:
        raise InputError(
            f"this SLURM job has {tasks} tasks but the trainer expects {num_nodes} node(s) x {per_node} device(s). "
            "Start one task per device (--ntasks-per-node = devices) or pass --trainer.devices and "
            "--trainer.num_nodes after --config (the slurm/ scripts do)."
        )


def continue_named_run(config: Namespace, logger_args: Namespace) -> None:
    """A run given an explicit version (or a SLURM job's) resumes from that folder's ``last.ckpt``, if any.

    Starting afresh there would mix two runs' checkpoints and metrics in one folder.
    """
    version = logger_args.version
    if version is None or not hasattr(logger_args, "save_dir"):
        return
    folder = version if isinstance(version, str) else f"version_{version}"
    last = Path(logger_args.save_dir) / config.experiment / folder / "checkpoints" / "last.ckpt"
    if last.exists():  # a file, or a folder (DeepSpeed checkpoints)
        rank_zero_info(f"Resuming from {last} (the run folder already holds a checkpoint).")
        config.ckpt_path = str(last)


def resolve_resume(config: Namespace, logger_args: Namespace | None) -> None:
    """``--ckpt_path last``: find the newest ``last.ckpt`` of this experiment and log into its version.

    Lightning alone would look only in a new, empty version folder and silently start from scratch.
    """
    if logger_args is None or not hasattr(logger_args, "save_dir"):
        return
    experiment = Path(logger_args.save_dir) / config.experiment
    candidates = sorted(experiment.glob("*/checkpoints/last.ckpt"), key=lambda path: path.stat().st_mtime)
    if not candidates:
        raise SystemExit(
            f"--ckpt_path last: no last.ckpt under {experiment}/*/checkpoints/. "
            "Start a new run without --ckpt_path, or give the checkpoint file's path."
        )
    latest = candidates[-1]
    config.ckpt_path = str(latest)
    logger_args.version = latest.parent.parent.name


# bertcls' own commands beside Lightning's fit/validate/test/predict: name -> module with ``main(argv)``.
TOOL_COMMANDS = {
    "download": "bertcls.commands.download",
    "convert": "bertcls.commands.convert",
}


def cli_options() -> dict[str, Any]:
    """``BertClsCLI``'s keyword arguments, shared with ``bertcls download`` (which parses the same configs)."""
    return {
        "seed_everything_default": 42,
        "trainer_defaults": {
            # Sharding happens in LengthBucketBatchSampler; Lightning must not add a DistributedSampler.
            "use_distributed_sampler": False,
            # Without a config (`bertcls test --ckpt_path ...`) outputs still go to checkpoints/<experiment>/.
            "logger": {"class_path": "bertcls.loggers.CSVLogger", "init_args": {"save_dir": "checkpoints"}},
        },
        "save_config_callback": SaveConfigToRunFolder,
        "save_config_kwargs": {"overwrite": True},
    }


def leave_process_group() -> None:
    """After a successful run, leave the process group together, while the interpreter is still whole.

    Left to Lightning's exit hook, a gloo group torn down during interpreter shutdown sometimes aborts the
    process ("terminate called without an active exception") after all the work is done (about 1 run in 10
    of 2-process CPU DDP here).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in TOOL_COMMANDS:
        importlib.import_module(TOOL_COMMANDS[argv[0]]).main(argv[1:])
        return
    # The sampler returns every index (it has no drop_last to set); Lightning cannot know that.
    warnings.filterwarnings("ignore", message=r".*custom batch sampler `LengthBucketBatchSampler`")
    # test/validate/predict from a checkpoint of another folder: the checkpoint callbacks' state is not needed.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    # Not true here: the data module restores the sampler's position, so a mid-epoch resume replays nothing.
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")  # Lightning 2.6
    logging.getLogger("lightning.pytorch").addFilter(lambda record: not record.getMessage().startswith("💡 Tip"))
    try:
        BertClsCLI(BertClassifier, ClassificationDataModule, **cli_options(), args=args)
        leave_process_group()
    except InputError as error:  # bad input: the message says where and how to fix it; no traceback
        kind = "data error" if isinstance(error, DataError) else "error"
        raise SystemExit(f"bertcls: {kind}: {error}") from error


if __name__ == "__main__":
    main()
