"""Keep ``last.ckpt``: the newest training state, which resumes (``--ckpt_path last``, requeue) start from."""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.strategies import DeepSpeedStrategy, Strategy
from lightning.pytorch.trainer.states import TrainerFn

from bertcls.errors import InputError
from bertcls.lightning_internals import at_step_boundary

# How often (in optimizer steps) the ranks compare clocks for ``every_n_minutes``: one all-reduce of a single
# number every so many steps, against the gradients' all-reduce every step.
CLOCK_CHECK_EVERY_N_STEPS = 10


class LastCheckpoint(Checkpoint):
    """Write ``<run>/checkpoints/last.ckpt`` every ``every_n_train_steps`` optimizer steps, every
    ``every_n_minutes`` of training, and after every epoch (``0`` / ``None`` turn the first two off).

    A save is only ever taken at an optimizer-step boundary, when no gradients of a partial accumulation are
    pending (a checkpoint cannot hold them, so a resume would silently drop them); a save that falls due
    elsewhere waits for the next boundary.

    Each write replaces the previous one atomically: a file through ``bertcls.checkpoint_io.AtomicCheckpointIO``;
    a checkpoint folder (DeepSpeed, sharded FSDP), which cannot be renamed over another, goes into one of two
    slots in turn (``last-a.ckpt``, ``last-b.ckpt``) and ``last.ckpt`` becomes a symbolic link to the slot
    once it is complete, so a kill during the write leaves the link on the previous, whole checkpoint.
    Together with the data module's sampler position and the step-seeded dropout, a run killed at any
    moment and resumed from this file ends with the weights of an uninterrupted run, having lost at most
    the work since the previous save.

    ``every_n_minutes`` suits fast GPUs, where a large model's full state (about 4 GB for BERT-large with
    AdamW) every few hundred steps costs more time than the steps themselves. Under DDP the ranks agree on
    it through one small all-reduce every ``CLOCK_CHECK_EVERY_N_STEPS`` steps (any rank whose clock says it
    is time makes it time for all), so that every rank joins the collective save.

    Being a ``Checkpoint``, Lightning runs it after the other callbacks, so the state it saves includes
    their updates of the same step (the best score of ``BestCheckpoint``, for example).
    """

    def __init__(
        self, every_n_train_steps: int = 200, every_n_minutes: float | None = None, filename: str = "last.ckpt"
    ) -> None:
        check_interval("every_n_train_steps", every_n_train_steps, "0 (off) or more")
        if every_n_minutes is not None:
            check_interval("every_n_minutes", every_n_minutes, "more than 0, or null (off)", strict=True)
        self.every_n_train_steps = every_n_train_steps
        self.every_n_minutes = every_n_minutes
        self.filename = filename
        self._saved_at: int = 0  # the optimizer step of the latest save (or of the run's start)
        self._saved_time = time.monotonic()
        self._checked_clock_at: int | None = None
        self._due = False  # a save fell due and waits for an optimizer-step boundary
        self.saved_path: Path | None = None

    def path(self, trainer: L.Trainer) -> Path:
        """``checkpoints/`` in the logger's run folder, as ``ModelCheckpoint`` uses, else in ``default_root_dir``."""
        root = trainer.log_dir if trainer.loggers else trainer.default_root_dir
        return Path(root) / "checkpoints" / self.filename

    def save(self, trainer: L.Trainer) -> Path:
        """Write the current state now (all ranks must call this: the save is collective)."""
        path = self.path(trainer)
        if writes_folders(trainer.strategy):
            save_into_slot(trainer, path)
        else:
            trainer.save_checkpoint(path, weights_only=False)  # the full state, on purpose (Lightning asks)
        self._saved_at = trainer.global_step
        self._saved_time = time.monotonic()
        self._due = False
        self.saved_path = path
        return path

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Count from where this run starts (a resumed run: the checkpoint's step), not from step 0.
        self._saved_at = self._checked_clock_at = trainer.global_step
        self._saved_time = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self._due = self._due or self._steps_due(trainer) or self._time_due(trainer)
        # The epoch's own save follows its validation (see validation_comes_next), and so does the save at the end
        # of training (FinalValidation validates there): a save before it would resume into a run with nothing left.
        ends = validation_comes_next(trainer) or training_ends_after_this_batch(trainer)
        if self._due and at_step_boundary(trainer) and not ends:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return
        if at_step_boundary(trainer) or is_last_epoch(trainer):
            self.save(trainer)
        else:
            self._due = True

    def _steps_due(self, trainer: L.Trainer) -> bool:
        """Whether a multiple of ``every_n_train_steps`` has been reached since the latest save."""
        every = self.every_n_train_steps
        return bool(every) and trainer.global_step // every > self._saved_at // every

    def _time_due(self, trainer: L.Trainer) -> bool:
        """Whether ``every_n_minutes`` have passed since the latest save, on any rank's clock.

        The clocks are compared on the batch where the step count reaches a multiple of
        ``CLOCK_CHECK_EVERY_N_STEPS``: that batch is the same on every rank, so all join the all-reduce.
        """
        step = trainer.global_step
        if self.every_n_minutes is None or step % CLOCK_CHECK_EVERY_N_STEPS or step == self._checked_clock_at:
            return False
        self._checked_clock_at = step
        late = time.monotonic() - self._saved_time >= self.every_n_minutes * 60
        return trainer.strategy.reduce_boolean_decision(late, all=False)


def check_interval(option: str, value: float, allowed: str, strict: bool = False) -> None:
    """Refuse a negative (``strict``: or zero, or not finite) save interval, naming the option and the fix."""
    if value < 0 or (strict and not (0 < value < math.inf)):
        raise InputError(
            f"trainer.callbacks LastCheckpoint.{option} must be {allowed}, got {value}. "
            "Fix it in your callbacks config (see configs/callbacks/default.yaml)."
        )


def is_last_epoch(trainer: L.Trainer) -> bool:
    """Whether training stops after the epoch now ending (``max_epochs``, ``max_steps`` or a requested stop)."""
    epochs_done = trainer.max_epochs is not None and trainer.max_epochs >= 0
    epochs_done = epochs_done and trainer.current_epoch + 1 >= trainer.max_epochs
    steps_done = trainer.max_steps >= 0 and trainer.global_step >= trainer.max_steps
    return epochs_done or steps_done or trainer.should_stop


def validation_comes_next(trainer: L.Trainer) -> bool:
    """Whether the batch just trained was its epoch's last, so that the epoch's validation comes next.

    No checkpoint may be saved there: Lightning resumes such a checkpoint in the next epoch, and this epoch's
    validation (and the best checkpoint it may write) would never happen.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def training_ends_after_this_batch(trainer: L.Trainer) -> bool:
    """Whether fit ends after the batch just trained: it reached ``max_steps``, or it was the last epoch's last."""
    if 0 <= trainer.max_steps <= trainer.global_step:
        return True
    last_epoch = trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch + 1
    return last_epoch and validation_comes_next(trainer)


def writes_folders(strategy: Strategy) -> bool:
    """Whether the strategy saves a checkpoint as a folder of shards rather than as one file."""
    # Lightning has no public flag for it; FSDP's choice is its (private) ``_state_dict_type``.
    return isinstance(strategy, DeepSpeedStrategy) or getattr(strategy, "_state_dict_type", None) == "sharded"


def save_into_slot(trainer: L.Trainer, link: Path) -> None:
    """Save into the slot ``link`` does not point to, then point ``link`` at it (an atomic rename of a link)."""
    slots = [link.with_name(f"{link.stem}-{name}{link.suffix}") for name in ("a", "b")]
    current = os.readlink(link) if link.is_symlink() else None
    slot = slots[1] if current == slots[0].name else slots[0]
    trainer.save_checkpoint(slot, weights_only=False)  # collective: every rank has read the link before any goes on
    if trainer.is_global_zero:
        if link.exists() and not link.is_symlink():  # a folder written before slots were used
            shutil.rmtree(link)
        staged = link.with_name(f".{link.name}.link")
        staged.unlink(missing_ok=True)
        staged.symlink_to(slot.name)
        os.replace(staged, link)
    trainer.strategy.barrier("LastCheckpoint.save_into_slot")
