"""Training speed as logged metrics: samples/s, real (non-padding) tokens/s and padding efficiency."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class Throughput(L.Callback):
    """Log ``speed/samples_per_sec``, ``speed/tokens_per_sec`` and ``speed/padding_efficiency`` for all ranks together.

    Measured over windows of ``window`` training batches (an epoch's last window may be shorter): wall time from
    the end of one batch to the end of the next (data loading included, validation not), summed over the ranks
    with one all-reduce per window.
    Tokens are real ones (the attention mask), so padding does not count as work. The latest window's figures
    are logged at every step and shown in the progress bar.
    """

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._last_time: float | None = None
        self._reset_window()
        self._latest: dict[str, float] = {}

    def _reset_window(self) -> None:
        self._seconds = 0.0
        self._samples = 0
        self._tokens: torch.Tensor | int = 0
        self._slots = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset_window()  # windows never straddle epochs: every rank then reduces at the same batches
        self._last_time = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_time = None  # the interval that holds validation is not training time

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._last_time is None:
            self._last_time = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self._seconds += now - self._last_time
        self._last_time = now
        mask = batch["attention_mask"]
        self._samples += mask.shape[0]
        self._tokens = self._tokens + mask.sum()  # stays on the device: no synchronisation per batch
        self._slots += mask.numel()
        if (batch_idx + 1) % self.window == 0 or batch_idx + 1 == trainer.num_training_batches:
            self._latest = self._window_rates(trainer, pl_module)
            self._reset_window()
        if self._latest:
            pl_module.log_dict(self._latest, on_step=True, on_epoch=False, prog_bar=True)

    def _window_rates(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        totals = torch.stack(
            [
                torch.as_tensor(value, dtype=torch.float32, device=pl_module.device)
                for value in (self._samples, self._tokens, self._slots, self._seconds)
            ]
        )
        samples, tokens, slots, seconds = trainer.strategy.reduce(totals, reduce_op="sum").tolist()
        seconds /= trainer.world_size  # the ranks' mean wall time; samples and tokens add up
        return {
            "speed/samples_per_sec": samples / seconds,
            "speed/tokens_per_sec": tokens / seconds,
            "speed/padding_efficiency": tokens / slots,
        }
