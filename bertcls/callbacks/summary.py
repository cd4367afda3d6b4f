"""A short summary at the end of ``fit``: the figures that matter and where the files went."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from bertcls.callbacks.last_checkpoint import LastCheckpoint


class RunSummary(L.Callback):
    """Record the wall time of ``fit``; ``print_summary`` then shows metrics, checkpoints and folders.

    The ``bertcls`` command calls ``print_summary`` once ``fit`` has returned, so that the summary comes
    after the progress bar's last frame rather than above it.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self._seconds = 0.0
        self._log_dir: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._seconds = time.perf_counter() - self._started
        # Here, on every rank: under DDP ``trainer.log_dir`` is a broadcast, which rank 0 alone (print_summary)
        # would wait on forever (NCCL) or fail in once the other ranks have exited (gloo).
        self._log_dir = trainer.log_dir

    @rank_zero_only
    def print_summary(self, trainer: L.Trainer) -> None:
        minutes, seconds = divmod(self._seconds, 60)
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        lines = ["", "=" * 60, "bertcls fit finished", "=" * 60]
        capped = " (trainer.max_steps reached)" if 0 < trainer.max_steps <= trainer.global_step else ""
        lines.append(f"epochs: {trainer.current_epoch}   optimizer steps: {trainer.global_step}{capped}")
        lines.append(f"wall time: {int(minutes)} min {seconds:.0f} s")
        for name in sorted(metrics):
            if name.startswith(("val/", "train/padding")):
                lines.append(f"{name}: {metrics[name]:.4f}")
        for checkpoint in trainer.checkpoint_callbacks:
            if isinstance(checkpoint, LastCheckpoint) and checkpoint.saved_path is not None:
                lines.append(f"last checkpoint: {checkpoint.saved_path}")
            if not isinstance(checkpoint, ModelCheckpoint) or not checkpoint.best_model_path:
                continue
            score = checkpoint.best_model_score
            best = f" ({checkpoint.monitor} = {float(score):.4f})" if score is not None else ""
            lines.append(f"best checkpoint{best}: {checkpoint.best_model_path}")
        if self._log_dir:
            lines.append(f"logs and config: {self._log_dir}")
        lines.append("=" * 60)
        print("\n".join(lines), flush=True)
