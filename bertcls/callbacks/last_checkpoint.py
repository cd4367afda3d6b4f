"""Keep ``last.ckpt``: the newest training state, which resumes (``--ckpt_path last``, requeue) start from."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.strategies import DeepSpeedStrategy, Strategy
from lightning.pytorch.trainer.states import TrainerFn

from bertcls.errors import InputError


class LastCheckpoint(Checkpoint):
    """Write ``<run>/checkpoints/last.ckpt`` every ``every_n_train_steps`` optimizer steps and after every epoch.

    Each write replaces the previous one atomically: a file through ``bertcls.checkpoint_io.AtomicCheckpointIO``;
    a checkpoint folder (DeepSpeed, sharded FSDP), which cannot be renamed over another, goes into one of two
    slots in turn (``last-a.ckpt``, ``last-b.ckpt``) and ``last.ckpt`` becomes a symbolic link to the slot
    once it is complete, so a kill during the write leaves the link on the previous, whole checkpoint.
    Together with the data module's sampler position and the step-seeded dropout, a run killed at any
    moment and resumed from this file ends with the weights of an uninterrupted run, having lost at most
    ``every_n_train_steps`` steps of work. ``0`` saves at epoch ends only.

    Being a ``Checkpoint``, Lightning runs it after the other callbacks, so the state it saves includes
    their updates of the same step (the best score of ``BestCheckpoint``, for example).
    """

    def __init__(self, every_n_train_steps: int = 200, filename: str = "last.ckpt") -> None:
        if every_n_train_steps < 0:
            raise InputError(
                f"trainer.callbacks LastCheckpoint.every_n_train_steps must be 0 (save at epoch ends only) or more, "
                f"got {every_n_train_steps}. Fix it in your callbacks config (see configs/callbacks/default.yaml)."
            )
        self.every_n_train_steps = every_n_train_steps
        self.filename = filename
        self._saved_at: int | None = None
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
            trainer.save_checkpoint(path)
        self._saved_at = trainer.global_step
        self.saved_path = path
        return path

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if validation_comes_next(trainer):  # the epoch's own save follows its validation
            return
        step = trainer.global_step
        if self.every_n_train_steps and step % self.every_n_train_steps == 0 and step != self._saved_at:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self.save(trainer)


def validation_comes_next(trainer: L.Trainer) -> bool:
    """Whether the batch just trained was its epoch's last, so that the epoch's validation comes next.

    No checkpoint may be saved there: Lightning resumes such a checkpoint in the next epoch, and this epoch's
    validation (and the best checkpoint it may write) would never happen.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def writes_folders(strategy: Strategy) -> bool:
    """Whether the strategy saves a checkpoint as a folder of shards rather than as one file."""
    # Lightning has no public flag for it; FSDP's choice is its (private) ``_state_dict_type``.
    return isinstance(strategy, DeepSpeedStrategy) or getattr(strategy, "_state_dict_type", None) == "sharded"


def save_into_slot(trainer: L.Trainer, link: Path) -> None:
    """Save into the slot ``link`` does not point to, then point ``link`` at it (an atomic rename of a link)."""
    slots = [link.with_name(f"{link.stem}-{name}{link.suffix}") for name in ("a", "b")]
    current = os.readlink(link) if link.is_symlink() else None
    slot = slots[1] if current == slots[0].name else slots[0]
    trainer.save_checkpoint(slot)  # collective: every rank has read the link before any goes on
    if trainer.is_global_zero:
        if link.exists() and not link.is_symlink():  # a folder written before slots were used
            shutil.rmtree(link)
        staged = link.with_name(f".{link.name}.link")
        staged.unlink(missing_ok=True)
        staged.symlink_to(slot.name)
        os.replace(staged, link)
    trainer.strategy.barrier("LastCheckpoint.save_into_slot")
