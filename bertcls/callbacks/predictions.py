"""Write ``bertcls predict`` results to a JSON Lines file, one line per input row, in input order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info


class PredictionWriter(BasePredictionWriter):
    """After ``predict``, write ``{"row", "label", "probabilities"}`` per input row, sorted by row.

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
        label_names = pl_module.hparams.label_names
        rows = torch.cat([batch["rows"] for batch in predictions])
        probabilities = torch.cat([batch["probabilities"] for batch in predictions])
        order = rows.argsort()
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(path.suffix + ".partial")
        with staging.open("w") as handle:
            for index in order.tolist():
                scores = probabilities[index].tolist()
                best = max(range(len(scores)), key=scores.__getitem__)
                record = {
                    "row": int(rows[index]),
                    "label": label_names[best],
                    "probabilities": dict(zip(label_names, (round(s, 6) for s in scores), strict=True)),
                }
                handle.write(json.dumps(record) + "\n")
        staging.replace(path)
        rank_zero_info(f"Predictions for {len(order)} rows written to {path}")
