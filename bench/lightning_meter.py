"""Lightning callback that measures bertcls' training loop and records its metrics, for the benchmarks here.

Added to ``bertcls fit`` (and ``bertcls test``) with ``--trainer.callbacks+=`` (this folder must be on
``sys.path``); at the end of ``fit`` / ``test`` it writes its figures to ``output`` as JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from harness import describe_optimizer, peak_rss_mb, rows_digest


class LightningMeter(L.Callback):
    """Time each epoch from its start to its last optimizer step (so no validation, no checkpoint writes),
    and count the examples, real (non-pad) tokens and padded tokens of every training batch.

    At the end of ``fit``: those figures, the peak RSS so far and the last validation metrics; at the end of
    ``test``: the test metrics. Metric names lose their ``val/`` or ``test/`` prefix.
    """

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
            "peak_rss_mb": peak_rss_mb(),  # before any test run in the same process
            "train_rows": rows_digest(datasets["train"].rows),
            "train_count": len(set(datasets["train"].rows.tolist())),
            "optimizer": describe_optimizer(trainer.optimizers[0]),
            "torch_threads": torch.get_num_threads(),
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
