"""Experiment loggers: every logger of a run writes into the same run folder, ``<save_dir>/<experiment>/<version>/``.

- ``CSVLogger``: ``metrics.csv``, continued (not erased) when a run is resumed.
- ``WandbLogger``: Weights & Biases, offline when W&B cannot be reached, one W&B run per run folder.

TensorBoard is Lightning's own ``TensorBoardLogger`` (``configs/logger/tensorboard.yaml``).
"""

from bertcls.loggers.csv import CSVLogger
from bertcls.loggers.wandb_run import WandbLogger

__all__ = ["CSVLogger", "WandbLogger"]
