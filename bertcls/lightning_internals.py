"""Lightning internals that bertcls reads, in one place: each has no public equivalent in Lightning 2.6."""

from __future__ import annotations

import lightning as L
from jsonargparse import ArgumentParser
from lightning.fabric.utilities.device_parser import _normalize_parse_gpu_string_input, _select_auto_accelerator
from lightning.pytorch.cli import LightningCLI


def logs_this_step(trainer: L.Trainer) -> bool:
    """Whether the training step now running sends its ``on_step`` metrics to the loggers.

    A metric computed on any other step is thrown away, so a costly one (the gradient norm) is computed only on
    these. Lightning decides it in its private logger connector (``log_every_n_steps``, and a stopping run).
    """
    return trainer._logger_connector.should_update_logs


def at_step_boundary(trainer: L.Trainer) -> bool:
    """Whether the training batch now running ends an optimizer step, so that no gradients of a partial accumulation
    are pending after it (every ``accumulate_grad_batches`` batches, and an epoch's last). Lightning's loop decides
    it, for DeepSpeed's engine too (``bertcls.deepspeed_strategy``), in its private ``_should_accumulate``."""
    return not trainer.fit_loop.epoch_loop._should_accumulate()


def auto_accelerator_name() -> str:
    """The accelerator ``trainer.accelerator: auto`` picks (a visible GPU, else the CPU): Lightning's private choice."""
    return _select_auto_accelerator()


def parse_gpu_devices(devices: object) -> int | list[int] | None:
    """``trainer.devices`` as Lightning reads it for GPUs: ``'4'`` -> 4, ``'0,1'`` -> [0, 1] (its private parser)."""
    return _normalize_parse_gpu_string_input(devices)


def subcommand_parser(cli: LightningCLI, subcommand: str) -> ArgumentParser:
    """The parser of one subcommand (``fit``), to give it defaults of its own: the CLI keeps them in a private dict."""
    return cli._subcommand_parsers[subcommand]
