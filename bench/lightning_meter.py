"""Lightning callback that measures bertcls' training loop and records its metrics, for the benchmarks here.

Added to ``bertcls fit`` (and ``bertcls test``) with ``--trainer.callbacks+=`` (this folder must be on
``sys.path``); at the end of ``fit`` / ``test`` it writes its figures to ``output`` as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from harness import BatchMeter, TrainClock, describe_optimizer, peak_device_mb, peak_rss_mb, rows_digest


class LightningMeter(L.Callback):
    """Time training from each epoch's start (or the first batch after a validation or a checkpoint write) to each
    optimizer step, so no validation and no checkpoint writes, and count the examples, real (non-pad) tokens and
    padded tokens of every training batch.

    After each validation in ``fit``: a point of the learning curve (step, training seconds so far, metrics).
    At the end of ``fit``: those figures, the peak memory so far and the last validation metrics; at the end of
    ``test``: the test metrics. Metric names lose their ``val/`` or ``test/`` prefix.
    """

    def __init__(self, output: str) -> None:
        self.output = output
        self.clock = TrainClock()
        self.meter = BatchMeter()
        self.curve: list[dict[str, Any]] = []
        self.paused = False  # a validation or a checkpoint write since the last step: not training time

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clock.restart()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        if self.paused:  # Lightning runs the checkpoint callbacks last, after this one's on_train_batch_end
            self.clock.restart()
            self.paused = False

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, torch.Tensor],
        batch_idx: int,
    ) -> None:
        self.clock.step_done()  # first: the counting below is not bertcls' work
        self.meter.add(batch["attention_mask"])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            metrics = evaluation(trainer, "validation", "val/")["metrics"]
            self.curve.append({"step": trainer.global_step, "seconds": self.clock.seconds, "metrics": metrics})
        self.paused = True

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.paused = True  # a mid-epoch last.ckpt (every 200 steps): seconds on a GPU for BERT-large

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datasets = trainer.datamodule.datasets
        figures = self.meter.figures() | {
            "steps": trainer.global_step,
            "train_seconds": self.clock.seconds,
            "peak_rss_mb": peak_rss_mb(),  # before any test run in the same process
            "peak_device_mb": peak_device_mb(),
            "train_rows": rows_digest(datasets["train"].rows),
            "train_count": len(set(datasets["train"].rows.tolist())),
            "optimizer": describe_optimizer(trainer.optimizers[0]),
            "torch_threads": torch.get_num_threads(),
            "precision": str(trainer.precision),
            "curve": self.curve,
        }
        write(self.output, figures | evaluation(trainer, "validation", "val/"))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write(self.output, evaluation(trainer, "test", "test/"))


def evaluation(trainer: L.Trainer, split: str, prefix: str) -> dict[str, Any]:
    """The split's metrics (prefix removed) and which source rows it held."""
    rows = trainer.datamodule.datasets[split].rows
    metrics = {
        name.removeprefix(prefix): float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith(prefix) and "/" not in name.removeprefix(prefix)  # not the per-label ones
    }
    return {"metrics": metrics, "eval_rows": rows_digest(rows), "eval_count": len(set(rows.tolist()))}


def write(output: str, figures: dict[str, Any]) -> None:
    Path(output).write_text(json.dumps(figures))
