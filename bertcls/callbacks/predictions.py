"""Write ``bertcls predict`` results to one JSON Lines or CSV file, one record per input row, in input order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from bertcls.data.dataset import TokenizedDataset
from bertcls.data.row_ids import RowIds
from bertcls.errors import InputError
from bertcls.inference.output import output_format, write_predictions, write_thresholds
from bertcls.inference.shares import records_by_row, remove_shares, share_path, write_share
from bertcls.tasks import Task


class PredictionWriter(BasePredictionWriter):
    """After ``predict``, write one record per input row, sorted by row (the task decides its fields).

    Each record starts with ``id`` (the row's value of ``data.id_column``, or its 0-based row number) and
    ``row``. Under DDP each rank writes the records of its rows to a share; rank 0 merges the shares by row
    into the one output file and removes them. The input's notes (e.g. how many texts were truncated at
    ``max_length``) are logged after the predictions are written.

    Args:
        output_file: a ``.jsonl`` or ``.csv`` file (see ``bertcls.inference.output``); default
            ``predictions.jsonl`` in the run's log folder. Multi-label thresholds go beside it, to
            ``<output_file>.thresholds.json``.
        top_k: single-label and pair: also list the ``top_k`` most probable labels with their probabilities.
    """

    def __init__(self, output_file: str | None = None, top_k: int = 1) -> None:
        super().__init__(write_interval="epoch")
        if top_k < 1:
            raise InputError(f"--predictions.top_k must be at least 1, got {top_k}.")
        if output_file:
            output_format(output_file)  # an unknown suffix fails before the model runs
        self.output_file = output_file
        self.top_k = top_k

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        task = getattr(trainer.datamodule, "task", None)
        if stage == "predict" and self.top_k > 1 and task is not None and not task.supports_top_k:
            raise InputError(
                f"--predictions.top_k applies to the single_label and pair tasks, not to '{task.name}': multi-label "
                "predictions hold every label at or above its threshold, and token predictions one tag per word."
            )

    def _path(self, trainer: L.Trainer) -> Path:
        return Path(self.output_file or Path(trainer.log_dir or trainer.default_root_dir) / "predictions.jsonl")

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: list[dict[str, torch.Tensor]],
        batch_indices: Any,
    ) -> None:
        task: Task = pl_module.task
        label_names: list[str] = pl_module.hparams.label_names
        dataset: TokenizedDataset = trainer.datamodule.datasets["predict"]
        records = self._records(task, label_names, dataset, predictions)
        path = self._path(trainer)
        shares = [share_path(path, rank) for rank in range(trainer.world_size)]
        if trainer.world_size > 1:
            write_share(shares[trainer.global_rank], records)
            trainer.strategy.barrier("bertcls_prediction_shares")
            if not trainer.is_global_zero:
                return
            rows = records_by_row(shares)
        else:
            rows = ([record] for record in records)
        thresholds = task.decision_thresholds(pl_module.head, label_names)
        sidecar = write_thresholds(path, thresholds) if thresholds is not None else None
        ids = RowIds(dataset)
        merged = task.merged_records(rows, label_names, dataset)
        count = write_predictions(path, ({"id": ids(record["row"]), **record} for record in merged))
        if trainer.world_size > 1:
            remove_shares(shares)
        rank_zero_info(
            f"Predictions for {count} rows written to {path}" + (f" (thresholds: {sidecar})" if sidecar else "")
        )
        if count < (expected := len(np.unique(dataset.rows))):
            rank_zero_warn(
                f"{expected - count} of {expected} input rows were not predicted (trainer.limit_predict_batches?)."
            )
        for note in dataset.meta.get("notes", []):
            rank_zero_info(note)

    def _records(
        self,
        task: Task,
        label_names: list[str],
        dataset: TokenizedDataset,
        predictions: list[dict[str, torch.Tensor]],
    ) -> Iterator[dict[str, Any]]:
        """This rank's records, in row order, from its ``predict_step`` outputs."""
        if not predictions:
            return iter(())
        outputs = {key: torch.cat([batch[key] for batch in predictions]) for key in predictions[0]}
        return task.prediction_records(outputs, label_names, dataset, self.top_k)
