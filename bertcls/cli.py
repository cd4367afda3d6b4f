"""The ``bertcls`` command: ``LightningCLI`` with bertcls' model, data module and defaults.

Subcommands are Lightning's: ``fit``, ``validate``, ``test``, ``predict``; configuration comes from
YAML files under ``configs/`` (``--config`` may be given several times; later files override earlier
ones) and from ``--section.key value`` flags.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from bertcls.callbacks import PredictionWriter
from bertcls.data.datamodule import ClassificationDataModule
from bertcls.model.module import BertClassifier


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
        if self.subcommand == "fit" and config.ckpt_path == "last":
            resolve_resume(config, logger_args)


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


def main(args: list[str] | None = None) -> None:
    # The sampler returns every index (it has no drop_last to set); Lightning cannot know that.
    warnings.filterwarnings("ignore", message=r".*custom batch sampler `LengthBucketBatchSampler`")
    BertClsCLI(
        BertClassifier,
        ClassificationDataModule,
        seed_everything_default=42,
        trainer_defaults={"use_distributed_sampler": False},
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
