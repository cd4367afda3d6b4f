"""The ``bertcls`` command: ``LightningCLI`` with bertcls' model, data module and defaults.

Subcommands are Lightning's: ``fit``, ``validate``, ``test``, ``predict``; configuration comes from
YAML files under ``configs/`` (``--config`` may be given several times; later files override earlier
ones) and from ``--section.key value`` flags.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from jsonargparse import Namespace, strip_meta
from lightning.pytorch.callbacks import Callback, Checkpoint, LearningRateMonitor, ModelSummary, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from bertcls.atomic_files import atomic_write_text
from bertcls.callbacks import PredictionWriter, RunSummary
from bertcls.checkpoint_io import read_checkpoint
from bertcls.data.datamodule import DEFAULT_MAX_LENGTH, ClassificationDataModule
from bertcls.data.encoding import default_cache_dir
from bertcls.data.sampler import BatchingError
from bertcls.data.stdin import STDIN
from bertcls.data.texts import DEFAULT_TEXT_SEPARATOR
from bertcls.errors import InputError, reported_as_exit
from bertcls.export.reimport import checkpoint_file, is_exported_folder
from bertcls.lightning_internals import subcommand_parser
from bertcls.model.bundled_tokenizer import restore_bundled_tokenizer
from bertcls.model.encoder import position_limit
from bertcls.model.module import BertClassifier
from bertcls.option_parser import OptionParser
from bertcls.quiet import quiet_libraries
from bertcls.run_folder import DEFAULT_EXPERIMENT, assign_run_folder, check_slurm_tasks
from bertcls.run_info import run_info
from bertcls.tasks import DEFAULT_TASK


class SaveConfigToRunFolder(SaveConfigCallback):
    """Save the resolved config in the run folder (``config.yaml`` for ``fit``, ``config-<command>.yaml`` for the
    others), with ``run_info.yaml`` (git commit, packages, hardware); log both to W&B and TensorBoard.

    Without a logger Lightning would write the config into the working directory, over any file of that name.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.logger is None:
            return
        command = getattr(stage, "value", stage)  # Lightning passes its TrainerFn enum
        self.config_filename = "config.yaml" if command == "fit" else f"config-{command}.yaml"
        self.run_folder = Path(trainer.log_dir)  # on every rank: a broadcast under DDP; save_config runs on rank 0
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        info = run_info(trainer)
        atomic_write_text(self.run_folder / "run_info.yaml", yaml.safe_dump(info, sort_keys=False))
        resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            if not isinstance(logger, LightningCSVLogger):  # the CSV logger's folder holds both files already
                logger.log_hyperparams({"config": resolved, "run": info, "command": getattr(stage, "value", stage)})


class BertClsCLI(LightningCLI):
    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # The main parser and each subcommand's: `--data.text_colum` must be refused, not read as text_column.
        return super().init_parser(**{"allow_abbrev": False, **kwargs})

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if add_subcommands:  # fit joins texts with the default (--print_config shows it); the others as the checkpoint
            subcommand_parser(self, "fit").set_defaults({"data.text_separator": DEFAULT_TEXT_SEPARATOR})
            # The progress bar's last line gives the metrics; Lightning's table repeats them (--verbose true shows it).
            for subcommand in ("validate", "test"):
                subcommand_parser(self, subcommand).set_defaults({"verbose": False})

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment",
            default=DEFAULT_EXPERIMENT,
            help="Run name: outputs go to <logger save_dir>/<experiment>/<version>/ (it sets the logger's name).",
        )
        # The tokenizer must be the encoder's, and a model restored from a checkpoint brings its labels.
        parser.link_arguments("model.model_name", "data.tokenizer", apply_on="parse")
        parser.link_arguments("model.label_names", "data.label_names", apply_on="parse")
        # Running a model's own code is one decision for its encoder and its tokenizer.
        parser.link_arguments("model.trust_remote_code", "data.trust_remote_code", apply_on="parse")
        # Always present, so `bertcls predict` writes its results (section `predictions:` in configs).
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        # Lightning applies a checkpoint's hyperparameters over these next; before_instantiate_classes puts the
        # user's choice back, so that no checkpoint turns on running code by itself (see BertClassifier).
        self.trust_remote_code = bool(subcommand and self.config[subcommand].model.trust_remote_code)
        checkpoint = self.config[subcommand].get("ckpt_path") if subcommand else None
        if checkpoint and Path(checkpoint).is_file():  # Lightning reads its hyperparameters next, with a traceback
            read_checkpoint(checkpoint, mmap=True)
        if checkpoint and is_exported_folder(checkpoint):  # `bertcls export`'s folder: read as a checkpoint
            cache_dir = self.config[subcommand].data.cache_dir
            converted = checkpoint_file(Path(checkpoint), Path(cache_dir) if cache_dir else default_cache_dir())
            self.config[subcommand].ckpt_path = str(converted)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        config.model.trust_remote_code = config.data.trust_remote_code = self.trust_remote_code
        check_task(config)
        # One task for both: a checkpoint's (restored into model.task) wins over the data config's default.
        config.model.task = config.model.task or config.data.task
        config.data.task = config.model.task
        if SLURMEnvironment.detect():
            check_slurm_tasks(config.trainer.devices, config.trainer.num_nodes, config.trainer.accelerator)
        check_checkpoint(self.subcommand, config.ckpt_path)
        assign_run_folder(config, self.subcommand)
        if self.subcommand in ("validate", "test") and config.trainer.enable_progress_bar is False:
            config.verbose = True  # without the bar, Lightning's table is the only place the metrics show
        # Lightning refuses these callbacks when what they serve is off: the trainer option wins, they are dropped.
        for option, kind in CALLBACKS_OF_OPTIONS.items():
            if config.trainer[option] is False:
                callbacks = config.trainer.callbacks or []
                dropped = [entry for entry in callbacks if is_a(entry, kind)]
                config.trainer.callbacks = [entry for entry in callbacks if entry not in dropped]
                if kind is Checkpoint and dropped and self.subcommand == "fit":
                    rank_zero_info(checkpointing_off_note(dropped))
        # bertcls' displays where no config names one (test --ckpt_path X): not Lightning's rich bar, whose last
        # frame a log file gets after everything else, nor its model summary table.
        for option, (kind, class_path) in DISPLAY_CALLBACKS.items():
            configured = [entry for entry in config.trainer.callbacks or [] if is_a(entry, kind)]
            if config.trainer[option] is not False and not configured:
                default = Namespace(class_path=class_path, init_args=Namespace())
                config.trainer.callbacks = [*(config.trainer.callbacks or []), default]
        add_atomic_checkpoint_io(config.trainer)
        if config.ckpt_path and Path(config.ckpt_path).is_file():
            # mmap: only the small entries are read, not the weights.
            checkpoint = read_checkpoint(config.ckpt_path, mmap=True)
            if self.subcommand == "fit" and "optimizer_states" not in checkpoint:
                raise InputError(
                    f"--ckpt_path {config.ckpt_path} holds the weights only (a best-*.ckpt), not the training state "
                    "fit resumes from. Resume from the run's last.ckpt (--ckpt_path last), or start a new run from "
                    "these weights: bertcls convert CKPT --hf-folder DIR, then --model.model_name DIR."
                )
            # The checkpoint's own tokenizer: the training run's model folder or hub name may be gone.
            cache_root = Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()
            bundled = restore_bundled_tokenizer(checkpoint, cache_root)
            if bundled is not None:
                config.data.tokenizer = str(bundled)
            trained = checkpoint.get("datamodule_hyper_parameters", {})
            if config.data.max_length is None:  # tokenize as the model was trained
                config.data.max_length = trained.get("max_length")
            if config.data.text_separator is None:  # join texts as the model was trained
                config.data.text_separator = trained.get("text_separator")
        check_max_length(config)

    def instantiate_classes(self) -> None:
        self._prepare_data()
        try:
            super().instantiate_classes()
        except ValueError as error:  # jsonargparse's, for a class in a list or union (trainer.callbacks, loggers)
            cause = input_error_behind(error)
            if cause is None:
                raise
            raise cause from error

    def _prepare_data(self) -> None:
        """Read, check and tokenize (into the cache) the splits of this command before the model loads its weights.

        Bad data then stops the run in seconds, and the data module's ``setup`` finds the cache built. Standard
        input is left to the data module: it can be read only once.
        """
        data = strip_meta(self.config[self.subcommand].data).as_dict()
        if data.get("predict_file") != STDIN:
            ClassificationDataModule(**data).build_cache(self.subcommand)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BatchingError as error:  # raised where the data loaders are built, in the sampler's terms
            raise InputError(batching_advice(self.config[subcommand], subcommand, error)) from error
        except RuntimeError as error:  # torch.OutOfMemoryError (CUDA) is one; the CPU allocator raises a plain one
            if not is_out_of_memory(error):
                raise
            raise InputError(out_of_memory_advice(self.config[subcommand], error)) from error

    def after_fit(self) -> None:
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunSummary):
                callback.print_summary(self.trainer)


def input_error_behind(error: BaseException) -> InputError | None:
    """The ``InputError`` among an exception's causes: jsonargparse reports one raised by a class it instantiates
    inside a list or union (a callback's ``__init__``) as a ``ValueError`` of its own, listing every subtype tried."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, InputError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


CALLBACKS_OF_OPTIONS: dict[str, type[Callback]] = {
    "enable_progress_bar": ProgressBar,
    "enable_model_summary": ModelSummary,
    "enable_checkpointing": Checkpoint,
    "logger": LearningRateMonitor,  # it needs a logger to log to
}


# The trainer option that turns a display off, the kind of callback that shows it, and bertcls' own.
DISPLAY_CALLBACKS: dict[str, tuple[type[Callback], str]] = {
    "enable_progress_bar": (ProgressBar, "bertcls.callbacks.ProgressBar"),
    "enable_model_summary": (ModelSummary, "bertcls.callbacks.ParameterCount"),
}


def add_atomic_checkpoint_io(trainer: Namespace) -> None:
    """Write checkpoints with ``AtomicCheckpointIO`` (a kill never leaves half a file), unless the trainer's
    ``plugins`` name another checkpoint writer. Here once, rather than in every trainer config."""
    plugins = (
        trainer.plugins if isinstance(trainer.plugins, list) else [] if trainer.plugins is None else [trainer.plugins]
    )
    if not any(is_a(entry, CheckpointIO) for entry in plugins):
        atomic = Namespace(class_path="bertcls.checkpoint_io.AtomicCheckpointIO", init_args=Namespace())
        trainer.plugins = [*plugins, atomic]


def checkpointing_off_note(dropped: list[Namespace]) -> str:
    """The note on the checkpoint callbacks that ``--trainer.enable_checkpointing false`` leaves out."""
    names = ", ".join(entry.class_path.rpartition(".")[2] for entry in dropped)
    return (
        f"trainer.enable_checkpointing false: no checkpoint is written (left out of trainer.callbacks: {names}), so "
        "this run cannot be resumed (--ckpt_path last), tested or exported, and a preemption signal saves nothing."
    )


def is_a(entry: Namespace | str, kind: type) -> bool:
    """Whether a ``trainer.callbacks`` or ``trainer.plugins`` entry (``class_path`` and ``init_args``) configures a
    ``kind`` object (a plugin given by name, like ``"bf16-mixed"``, configures none)."""
    module, _, name = getattr(entry, "class_path", "").rpartition(".")
    return bool(module) and issubclass(getattr(importlib.import_module(module), name), kind)


# The split each command evaluates with data.eval_batch_size (fit trains on "train" with data.batch_size).
EVALUATED_SPLIT = {"fit": "validation", "validate": "validation", "test": "test", "predict": "predict"}
CHECKPOINT_EXAMPLE = "checkpoints/<experiment>/version_0/checkpoints/last.ckpt (or the best-*.ckpt beside it)"


def check_task(config: Namespace) -> None:
    """Refuse data configured for one task with a model (a checkpoint's) of another, before anything is built.

    Only a task set on purpose is compared: the data module's default (``single_label``) gives way to the model's.
    """
    data_task, model_task = config.data.task, config.model.task
    if model_task and data_task not in (model_task, DEFAULT_TASK):
        source = f"--ckpt_path {config.ckpt_path}" if config.ckpt_path else "model.task"
        raise InputError(
            f"{source} is a model for task '{model_task}' (labels {config.model.label_names}), but data.task is "
            f"'{data_task}'. Use a checkpoint trained for '{data_task}', or leave data.task out (the model sets it)."
        )


def check_max_length(config: Namespace) -> None:
    """Refuse a ``data.max_length`` beyond the encoder's position embeddings, before anything is built: the run
    would stop in the embeddings at the first input that long (perhaps hours in)."""
    max_length = DEFAULT_MAX_LENGTH if config.data.max_length is None else config.data.max_length
    limit = position_limit(config.model.model_name, config.model.encoder_config)
    if limit is None or max_length <= limit:
        return
    given = "" if config.data.max_length is not None else " (the default)"
    model = (
        f"--ckpt_path {config.ckpt_path}"
        if config.model.encoder_config
        else f"model.model_name '{config.model.model_name}'"
    )
    raise InputError(
        f"data.max_length {max_length}{given} is longer than {model} can read: its encoder has {limit} positions "
        f"(max_position_embeddings in its config). Set --data.max_length {limit} or less."
    )


def check_checkpoint(subcommand: str, checkpoint: str | None) -> None:
    """Refuse a ``ckpt_path`` that would load nothing, before anything is built.

    Lightning would end in a traceback (a missing file; ``predict``, whose labels only a checkpoint brings), or
    evaluate an untrained head: without a checkpoint, and with ``last``, which it looks up only among the
    checkpoints of its own process (``fit``'s ``last`` is the experiment's newest, see ``assign_run_folder``).
    """
    if subcommand == "fit" and checkpoint in (None, "last"):
        return
    if checkpoint not in (None, "last") and Path(checkpoint).exists():
        return
    if checkpoint is None:
        raise InputError(
            f"bertcls {subcommand} needs a trained model, and no --ckpt_path was given (the classifier head would be "
            f"untrained, its labels unknown). Give a checkpoint written by bertcls fit, --ckpt_path "
            f"{CHECKPOINT_EXAMPLE}, or a folder written by bertcls export."
        )
    if checkpoint == "last":
        raise InputError(
            f"--ckpt_path last finds the latest run only for bertcls fit (to resume it); bertcls {subcommand} needs "
            f"the checkpoint's path, e.g. --ckpt_path {CHECKPOINT_EXAMPLE}."
        )
    raise InputError(
        f"--ckpt_path {checkpoint}: no such file or folder. Give the path of a checkpoint written by bertcls fit, "
        f"e.g. {CHECKPOINT_EXAMPLE}" + ("." if subcommand == "fit" else ", or of a folder written by bertcls export.")
    )


def batching_advice(config: Namespace, subcommand: str, error: BatchingError) -> str:
    """The sampler's complaint, prefixed with the split and the settings behind its batch size and processes."""
    if error.shuffle:
        split, option = "train", "data.batch_size"
    else:
        split, option = EVALUATED_SPLIT[subcommand], "data.eval_batch_size"
    default = " (unset: 2 x data.batch_size)" if not error.shuffle and not config.data.eval_batch_size else ""
    processes = f"{error.processes} process{'' if error.processes == 1 else 'es'}"
    return (
        f"the {split} split with {option} {error.batch_size}{default} and {processes} (trainer.devices x "
        f"trainer.num_nodes): {error}"
    )


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def out_of_memory_advice(config: Namespace, error: BaseException) -> str:
    """What ran out, with the settings that decide memory and what to change, in the order to try."""
    data, model, trainer = config.data, config.model, config.trainer
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"out of memory ({first_line[:300]}) with data.batch_size {data.batch_size}, data.max_length "
        f"{data.max_length}, trainer.precision {trainer.precision}, model.gradient_checkpointing "
        f"{model.gradient_checkpointing}. Try, in this order: --trainer.precision bf16-mixed (GPUs since Ampere); "
        "--model.gradient_checkpointing true; a smaller --data.batch_size with --trainer.accumulate_grad_batches "
        "raised to keep the effective batch; a lower --data.max_length (fewer texts fit whole); sharding the model "
        "and optimizer states over GPUs (configs/strategy/deepspeed-*.yaml, fsdp.yaml). Evaluation uses "
        "data.eval_batch_size (default 2x batch_size). Checkpoints written so far are intact: resume with "
        "--ckpt_path last. More in docs/configuration.md, section GPUs: strategies, precision, accumulation, memory."
    )


# bertcls' own commands beside Lightning's fit/validate/test/predict: name -> module with ``main(argv)``.
TOOL_COMMANDS = {
    "download": "bertcls.commands.download",
    "convert": "bertcls.commands.convert",
    "export": "bertcls.commands.export",
    "sweep-lines": "bertcls.commands.sweep_lines",
    "validate-data": "bertcls.commands.validate_data",
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
        "parser_class": OptionParser,  # "did you mean" for an unknown option
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
    quiet_libraries()
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in TOOL_COMMANDS:
        importlib.import_module(TOOL_COMMANDS[argv[0]]).main(argv[1:])
        return
    with reported_as_exit():  # bad input: the message says where and how to fix it; no traceback
        BertClsCLI(BertClassifier, ClassificationDataModule, **cli_options(), args=args)
        leave_process_group()


if __name__ == "__main__":
    main()
