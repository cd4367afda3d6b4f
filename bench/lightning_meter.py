"""Lightning callback that measures bertcls' training loop for ``train_throughput.py``.

Added to ``bertcls fit`` with ``--trainer.callbacks+=`` (this folder must be on ``sys.path``); at the end
of ``fit`` it writes its figures to ``output`` as JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from train_throughput import describe_optimizer, rows_digest


class LightningMeter(L.Callback):
    """Time each epoch from its start to its last optimizer step (so no validation, no checkpoint writes),
    and count the examples, real (non-pad) tokens and padded tokens of every training batch."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.windows: list[list[float]] = []
        self.samples = 0
        self.real_tokens = 0
        self.padded_tokens = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.perf_counter()
        self.windows.append([now, now])

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, torch.Tensor],
        batch_idx: int,
    ) -> None:
        self.windows[-1][1] = time.perf_counter()  # first: the counting below is not bertcls' work
        mask = batch["attention_mask"]
        self.samples += len(mask)
        self.real_tokens += int(mask.sum())
        self.padded_tokens += mask.numel()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datasets = trainer.datamodule.datasets
        figures = {
            "steps": trainer.global_step,
            "samples": self.samples,
            "real_tokens": self.real_tokens,
            "padded_tokens": self.padded_tokens,
            "train_seconds": sum(end - start for start, end in self.windows),
            "val_accuracy": float(trainer.callback_metrics["val/accuracy"]),
            "train_rows": rows_digest(datasets["train"].rows),
            "validation_rows": rows_digest(datasets["validation"].rows),
            "optimizer": describe_optimizer(trainer.optimizers[0]),
            "torch_threads": torch.get_num_threads(),
        }
        Path(self.output).write_text(json.dumps(figures))
