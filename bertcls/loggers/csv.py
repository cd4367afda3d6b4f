"""A CSV logger that never throws away what an earlier run already wrote."""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued rather than deleted.

    Lightning deletes the file when a run logs into a non-empty version folder, which is exactly what
    ``bertcls fit --ckpt_path last`` does: the resumed run would erase the metrics of every earlier epoch.
    """

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            header = next(csv.reader(file), [])
        # Known columns: new ones are merged into the header (Lightning rewrites the file), old ones are kept.
        self.metrics_keys = sorted(header)


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends to ``metrics.csv`` when a run is resumed."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
