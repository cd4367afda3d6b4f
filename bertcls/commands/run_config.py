"""A run's configuration as ``bertcls fit`` resolves it, for the commands that prepare or check a run."""

from __future__ import annotations

import warnings

from jsonargparse import Namespace

from bertcls.cli import BertClsCLI, cli_options
from bertcls.data.datamodule import ClassificationDataModule
from bertcls.model.module import BertClassifier


class _ParseOnly(BertClsCLI):
    """``bertcls fit``'s parser and config hooks (experiment, task, a checkpoint's tokenizer), building nothing."""

    def instantiate_classes(self) -> None:
        pass  # the model would load its weights, the trainer would create folders

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def parse_run_config(args: list[str]) -> Namespace:
    """The run's config exactly as ``bertcls fit ARGS`` resolves it."""
    with warnings.catch_warnings():
        # `args` is given while sys.argv holds `bertcls <command> ...`, which Lightning would warn about.
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter")
        cli = _ParseOnly(BertClassifier, ClassificationDataModule, **cli_options(), args=["fit", *args])
    return cli.config.fit
