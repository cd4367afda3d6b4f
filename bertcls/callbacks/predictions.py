"""Write ``bertcls predict`` results to a JSON Lines file, one line per input row, in input order."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info


class PredictionWriter(BasePredictionWriter):
    """After ``predict``, write one JSON record per input row, sorted by row (the task decides its fields).

    Args:
        output_file: where to write; default ``predictions.jsonl`` in the run's log folder. Under DDP each
            rank writes its share to ``<stem>.rank<N>.jsonl``.
    """

    def __init__(self, output_file: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_file = output_file

    def _path(self, trainer: L.Trainer) -> Path:
        path = Path(self.output_file or Path(trainer.log_dir or trainer.default_root_dir) / "predictions.jsonl")
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        return path

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: list[dict[str, torch.Tensor]],
        batch_indices: Any,
    ) -> None:
        records: Iterable[dict[str, Any]] = []
        if predictions:
            outputs = {key: torch.cat([batch[key] for batch in predictions]) for key in predictions[0]}
            dataset = trainer.datamodule.datasets["predict"]
            records = pl_module.task.prediction_records(outputs, pl_module.hparams.label_names, dataset)
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(path.suffix + ".partial")
        count = 0
        with staging.open("w") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
                count += 1
        staging.replace(path)
        rank_zero_info(f"Predictions for {count} rows written to {path}")
