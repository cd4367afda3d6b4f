"""Checkpoint and requeue when the scheduler warns that the job will be stopped."""

from __future__ import annotations

import os
import signal
import subprocess
from types import FrameType

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from bertcls.callbacks.last_checkpoint import LastCheckpoint


class Preempted(SystemExit):
    """Ends ``fit`` after the preemption checkpoint is written (and the SLURM job requeued)."""


class Preemption(L.Callback):
    """On ``signal_name`` (SLURM's ``--signal=SIGUSR1@90``), save ``last.ckpt``, requeue the job and stop.

    The handler only raises a flag. At the next optimizer-step boundary all ranks agree on it (any rank
    signalled is enough), write the checkpoint together through ``LastCheckpoint``, and rank zero runs
    ``scontrol requeue`` when inside a SLURM job. Lightning's own handler would instead save from inside
    the signal handler, which can interleave with a collective still running on another rank.

    The requeued job runs the same command; ``bertcls fit`` finds ``last.ckpt`` in the job's run folder
    and resumes from it (see ``docs/cluster.md``).
    """

    def __init__(self, signal_name: str = "SIGUSR1", requeue: bool = True) -> None:
        self.signal = signal.Signals[signal_name]
        self.requeue = requeue
        self._signalled = False
        self._previous_handler: object = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Installed before Lightning's signal connector runs, which then leaves this signal alone.
        if stage == "fit":
            self._previous_handler = signal.signal(self.signal, self._on_signal)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._previous_handler is not None:
            signal.signal(self.signal, self._previous_handler)
            self._previous_handler = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        at_step_boundary = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if not at_step_boundary or not trainer.strategy.reduce_boolean_decision(self._signalled, all=False):
            return
        last = next((callback for callback in trainer.callbacks if isinstance(callback, LastCheckpoint)), None)
        if last is None:
            rank_zero_warn(f"{self.signal.name} received but no LastCheckpoint callback is configured: nothing saved.")
            raise Preempted(f"bertcls: stopped by {self.signal.name} without a checkpoint")
        path = last.save(trainer)
        # `scontrol requeue` has SLURM SIGTERM every task at once. The state is saved: let each rank finish its
        # exit rather than run Lightning's SIGTERM handler, which calls a collective from inside the handler.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for logger in trainer.loggers:  # W&B shows the run as preempted, not crashed; the requeue continues it
            if hasattr(logger, "mark_preempting"):
                logger.mark_preempting()
        message = f"{self.signal.name}: saved {path} at step {trainer.global_step}"
        job = slurm_job_id()
        if self.requeue and job is not None and trainer.is_global_zero:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            if result.returncode == 0:
                message += f"; requeued SLURM job {job}"
            else:
                message += f"; `scontrol requeue {job}` failed: {result.stderr.strip()}"
        rank_zero_info(message)
        raise Preempted(0)


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for array tasks, else ``SLURM_JOB_ID``."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID")
