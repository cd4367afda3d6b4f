"""Progress display for a terminal and for a log file (a SLURM job's output)."""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from rich.console import Console

from bertcls.callbacks.throughput import Throughput
from bertcls.errors import InputError

# Progress-bar metrics under a short name (known ones first, in this order), and their format in plain lines.
SHORT_NAMES = {
    "train/loss": "loss",
    "train/grad_norm": "grad_norm",
    "speed/samples_per_sec": "samples/s",
    "speed/tokens_per_sec": "tokens/s",
    "speed/padding_efficiency": "padding",
}
FORMATS = {"loss": ".4f", "grad_norm": ".4g", "samples/s": ".1f", "tokens/s": ".0f", "padding": ".1%"}


class ProgressBar(RichProgressBar):
    """Lightning's rich bar on a terminal; in a log file, one plain line every ``every_n_steps`` batches.

    A live bar written to a file (a SLURM job's output) is either nothing until the end (rich) or thousands of
    carriage-return frames on one line (tqdm). Where stdout is not a terminal (decided once, at the first
    ``setup``), this prints instead, on global rank 0 only, a line when training starts, one every
    ``every_n_steps`` training batches (epoch, batch, loss, throughput, elapsed time and ETA in the epoch),
    one after each validation with its ``val/`` metrics, and for test and predict one every ``every_n_steps``
    batches and one at the end. Nothing during the sanity check. On both, ``v_num`` is hidden and metrics
    get short names (``train/loss`` is ``loss``, ``speed/samples_per_sec`` is ``samples/s``).

    After a resume in the middle of an epoch, elapsed time counts from the resume ("since the resume") and the ETA
    comes from the speed since then; until ``Throughput`` has measured a window, the line says
    ``samples/s measuring``. The ETA runs to the epoch's end, or to ``max_steps`` where training stops sooner.
    """

    def __init__(self, every_n_steps: int = 50, refresh_rate: int = 100, leave: bool = False) -> None:
        if every_n_steps < 1:
            raise InputError(
                f"trainer.callbacks ProgressBar.every_n_steps must be at least 1 (a line every that many batches), "
                f"got {every_n_steps}. Fix it in your callbacks config (see configs/callbacks/default.yaml)."
            )
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self.every_n_steps = every_n_steps
        self._plain: bool | None = None  # None until setup
        self._started = 0.0  # of the epoch (or of this process's training, resumed in the epoch), or of test / predict
        self._batches = 0  # batches since then
        self._resumed = False  # the clock started at a resume in the middle of the epoch

    @property
    def is_enabled(self) -> bool:  # the rich bar's switch: off in a log file
        return not self._plain and super().is_enabled

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self._plain is None:
            console = Console()
            self._plain = not (console.is_terminal or console.is_jupyter)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        known = {short: metrics.pop(name) for name, short in SHORT_NAMES.items() if name in metrics}
        return known | metrics

    # --- plain lines ----------------------------------------------------------------------------
    def _say(self, trainer: L.Trainer, *parts: str) -> None:
        if self._plain and self._enabled and trainer.is_global_zero:
            print("  ".join(part for part in parts if part), flush=True)

    def _restart_clock(self) -> None:
        self._started, self._batches = time.monotonic(), 0

    def _timing(self, done: int = 0, total: float = math.inf) -> str:
        """Time since the clock started and, with a known total, the time the remaining batches need at the speed
        measured since then."""
        elapsed = time.monotonic() - self._started
        text = f"elapsed {_clock(elapsed)}" + (" since the resume" if self._resumed else "")
        if math.isfinite(total) and self._batches:
            text += f"  eta {_clock(max(total - done, 0) * elapsed / self._batches)}"
        return text

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs > 0 else "unlimited"
        batches = self.total_train_batches
        per_epoch = f"{batches} batches per epoch" if math.isfinite(batches) else "batches per epoch unknown"
        limit = f"at most {trainer.max_steps} optimizer steps" if trainer.max_steps >= 0 else ""
        resume = f"resuming at epoch {trainer.current_epoch + 1}, step {trainer.global_step}"
        count = "1 epoch" if epochs == 1 else f"{epochs} epochs"
        self._say(trainer, "training", count, per_epoch, limit, resume if trainer.global_step else "")
        # Lightning calls on_train_epoch_start only when an epoch starts, not in an epoch resumed in its middle.
        self._restart_clock()
        self._resumed = trainer.global_step > 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._restart_clock()
        self._resumed = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._batches += 1
        if self._plain and (batch_idx + 1) % self.every_n_steps == 0:
            total = self.total_train_batches
            metrics = self.get_metrics(trainer, pl_module)
            if "samples/s" not in metrics and any(isinstance(callback, Throughput) for callback in trainer.callbacks):
                metrics["samples/s"] = "measuring"  # its first window of this process is not done
            shown = [_metric(name, value) for name, value in metrics.items() if not name.startswith("val/")]
            position = _position("step", batch_idx + 1, total)
            end = min(total, batch_idx + 1 + _batches_to_max_steps(trainer))
            self._say(trainer, _epoch(trainer), position, *shown, self._timing(batch_idx + 1, end))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._plain and not trainer.sanity_checking:
            metrics = sorted((name, float(value)) for name, value in trainer.callback_metrics.items())
            shown = [f"{name} {value:.4f}" for name, value in metrics if name.startswith("val/")]
            self._say(trainer, "validation", _epoch(trainer) if trainer.state.fn == "fit" else "", *shown)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_test_start(trainer, pl_module)
        self._restart_clock()

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        self._eval_batch_end(trainer, "test", trainer.num_test_batches, batch_idx, dataloader_idx)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_test_epoch_end(trainer, pl_module)
        self._say(trainer, "test", _finished(self._batches), self._timing())  # before the model's report

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_predict_start(trainer, pl_module)
        self._restart_clock()

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        self._eval_batch_end(trainer, "predict", trainer.num_predict_batches, batch_idx, dataloader_idx)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_predict_epoch_end(trainer, pl_module)
        self._say(trainer, "predict", _finished(self._batches), self._timing())  # before where they were written

    def _eval_batch_end(self, trainer: L.Trainer, name: str, totals: list, batch_idx: int, loader: int) -> None:
        self._batches += 1
        if self._plain and (batch_idx + 1) % self.every_n_steps == 0:
            label = f"{name} (loader {loader})" if len(totals) > 1 else name
            position = _position("batch", batch_idx + 1, totals[loader])
            self._say(trainer, label, position, self._timing(batch_idx + 1, totals[loader]))


def _epoch(trainer: L.Trainer) -> str:
    epochs = trainer.max_epochs
    return f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs is not None and epochs > 0 else "")


def _batches_to_max_steps(trainer: L.Trainer) -> float:
    """The training batches left until ``max_steps`` (about: a partial accumulation counts whole), or infinity."""
    if trainer.max_steps < 0:
        return math.inf
    return max(trainer.max_steps - trainer.global_step, 0) * trainer.accumulate_grad_batches


def _finished(batches: int) -> str:
    return f"finished {batches} batch" + ("" if batches == 1 else "es")


def _position(name: str, done: int, total: float) -> str:
    if math.isfinite(total) and total > 0:
        return f"{name} {done}/{int(total)} ({100 * done / total:.1f}%)"
    return f"{name} {done}"


def _metric(name: str, value: Any) -> str:
    try:
        return f"{name} {value:{FORMATS.get(name, '.4g')}}"
    except (TypeError, ValueError):
        return f"{name} {value}"


def _clock(seconds: float) -> str:
    """``M:SS``, or ``H:MM:SS`` from an hour on."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
