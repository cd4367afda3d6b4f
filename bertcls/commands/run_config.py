"""A run's configuration as ``bertcls fit`` resolves it, for the commands that prepare or check a run."""

from __future__ import annotations

import warnings
from typing import Any

from jsonargparse import Namespace

from bertcls.cli import BertClsCLI, cli_options
from bertcls.data.datamodule import ClassificationDataModule
from bertcls.lightning_internals import subcommand_parser
from bertcls.model.module import BertClassifier


class _ParseOnly(BertClsCLI):
    """``bertcls fit``'s parser and config hooks (experiment, task, a checkpoint's tokenizer), building nothing.

    ``prog`` names the command in usage errors (``bertcls validate-data``, not ``bertcls fit``)."""

    def __init__(self, *args: Any, prog: str, **kwargs: Any) -> None:
        self.prog = prog
        super().__init__(*args, **kwargs)

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        subcommand_parser(self, "fit").prog = self.prog  # jsonargparse set "bertcls fit"

    def instantiate_classes(self) -> None:
        pass  # the model would load its weights, the trainer would create folders

    def _run_subcommand(self, subcommand: str) -> None:
        pass


def parse_run_config(args: list[str], prog: str) -> Namespace:
    """The run's config exactly as ``bertcls fit ARGS`` resolves it; usage errors name the command ``prog``."""
    with warnings.catch_warnings():
        # `args` is given while sys.argv holds `bertcls <command> ...`, which Lightning would warn about.
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter")
        cli = _ParseOnly(BertClassifier, ClassificationDataModule, **cli_options(), args=["fit", *args], prog=prog)
    return cli.config.fit
