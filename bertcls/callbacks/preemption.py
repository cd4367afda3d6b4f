"""Checkpoint and requeue when the scheduler warns that the job will be stopped."""

from __future__ import annotations

import os
import signal
import subprocess
from types import FrameType

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from bertcls.callbacks.last_checkpoint import LastCheckpoint, validation_comes_next
from bertcls.lightning_internals import at_step_boundary
from bertcls.step_agreement import StepAgreement


class Preempted(SystemExit):
    """Ends ``fit`` after the preemption checkpoint is written (and the SLURM job requeued)."""


class Preemption(L.Callback):
    """On ``signal_name`` (SLURM's ``--signal=SIGUSR1@90``), save ``last.ckpt``, requeue the job and stop; on
    SIGTERM (``kill``, ``scancel``) or SIGINT (Ctrl-C), save ``last.ckpt`` and stop (``save_on_interrupt``).

    The handlers only raise a flag. At the next optimizer-step boundary all ranks agree on it (any rank signalled
    is enough), write the checkpoint together through ``LastCheckpoint``, and, for ``signal_name`` inside a SLURM
    job, rank zero runs ``scontrol requeue``. Lightning's own SLURM handler would instead save from inside the
    signal handler, which can interleave with a collective still running on another rank. With
    ``save_on_interrupt``, SIGTERM's handler replaces Lightning's for the whole fit: Lightning's ends fit (its
    ``SIGTERMException``) after any micro-batch and inside validation, before a step boundary could save.

    The requeued job runs the same command; ``bertcls fit`` finds ``last.ckpt`` in the job's run folder and
    resumes from it (see ``docs/cluster.md``). After SIGTERM or SIGINT the process exits with 143 or 130 (128 +
    the signal) and ``--ckpt_path last`` resumes. A second Ctrl-C interrupts at once, without saving. A signal
    during validation is acted on at the first training step after it; one during an epoch's last batch, after
    that epoch's validation.
    """

    def __init__(self, signal_name: str = "SIGUSR1", requeue: bool = True, save_on_interrupt: bool = True) -> None:
        self.signal = signal.Signals[signal_name]
        self.requeue = requeue
        self.save_on_interrupt = save_on_interrupt
        self._signalled = False
        self._interrupted = False
        self._terminated = False
        self._previous_handlers: dict[signal.Signals, object] = {}
        self._agreement = StepAgreement()
        self._shares_the_step_agreement = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        self._interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the next Ctrl-C stops at once
        rank_zero_info("SIGINT: saving last.ckpt after this step, then stopping (Ctrl-C again: stop now, no save)")

    def _on_terminate(self, signum: int, frame: FrameType | None) -> None:
        if not self._terminated:
            rank_zero_info("SIGTERM: saving last.ckpt at the next optimizer step, then stopping")
        self._terminated = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # The flags ride in the model's per-step all-reduce (bertcls.step_agreement) where it makes one; else
        # this callback agrees on them itself, at each step boundary.
        module_agreement = getattr(pl_module, "step_agreement", None)
        self._shares_the_step_agreement = isinstance(module_agreement, StepAgreement)
        self._agreement = module_agreement if self._shares_the_step_agreement else StepAgreement()
        self._agreement.add_source("preempt", lambda: self._signalled)
        self._agreement.add_source("interrupt", lambda: self.save_on_interrupt and self._interrupted)
        self._agreement.add_source("terminate", lambda: self.save_on_interrupt and self._terminated)
        # Installed before Lightning's signal connector runs, which then leaves this signal alone.
        if stage == "fit":
            self._previous_handlers[self.signal] = signal.signal(self.signal, self._on_signal)
            if self.save_on_interrupt:
                self._previous_handlers[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_interrupt)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._own_sigterm()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._own_sigterm()

    def _own_sigterm(self) -> None:
        """Replace the SIGTERM handler that Lightning installs after the callbacks' ``setup`` (its signal connector
        puts back the one from before fit when fit ends, whichever way it ends)."""
        if self.save_on_interrupt:
            signal.signal(signal.SIGTERM, self._on_terminate)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()  # Lightning skips the callbacks' teardown when fit ends by an exception

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        if at_step_boundary(trainer) and not validation_comes_next(trainer):  # then on_train_epoch_end acts
            self._act_on_signals(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._act_on_signals(trainer, after_validation=True)

    def _act_on_signals(self, trainer: L.Trainer, after_validation: bool = False) -> None:
        """If any rank was signalled: save ``last.ckpt`` on every rank, requeue (SIGUSR1) and stop.

        At a step boundary the ranks agreed on the flags in that step's all-reduce; after validation (once an
        epoch), or without the model's agreement, they agree now.
        """
        if after_validation or not self._shares_the_step_agreement:
            self._agreement.agree(trainer.strategy)
        agreed = self._agreement.agreed
        if not (agreed.get("preempt") or agreed.get("interrupt") or agreed.get("terminate")):
            return
        if not agreed["preempt"]:
            self._stop(trainer, agreed["terminate"])
        last = last_checkpoint(trainer)
        if last is None:
            rank_zero_warn(f"{self.signal.name} received but no LastCheckpoint callback is configured: nothing saved.")
            raise Preempted(f"bertcls: stopped by {self.signal.name} without a checkpoint")
        path = last.save(trainer)
        # `scontrol requeue` has SLURM SIGTERM every task at once. The state is saved: each rank finishes its exit
        # quietly (this callback's handler would announce a save that is no longer coming).
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

    def _stop(self, trainer: L.Trainer, sigterm: bool) -> None:
        """SIGTERM or SIGINT: save, then exit with 128 + the signal's number (the shell's convention)."""
        received = signal.SIGTERM if sigterm else signal.SIGINT
        last = last_checkpoint(trainer)
        if last is None:
            rank_zero_warn(f"{received.name} received but no LastCheckpoint callback is configured: nothing saved.")
            raise Preempted(128 + received)
        path = last.save(trainer)
        rank_zero_info(
            f"{received.name}: saved {path} at step {trainer.global_step}; resume with the same command and "
            "--ckpt_path last"
        )
        raise Preempted(128 + received)


def last_checkpoint(trainer: L.Trainer) -> LastCheckpoint | None:
    return next((callback for callback in trainer.callbacks if isinstance(callback, LastCheckpoint)), None)


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for array tasks, else ``SLURM_JOB_ID``."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID")
