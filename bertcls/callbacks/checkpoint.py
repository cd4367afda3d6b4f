"""Keep the best checkpoint by the task's own validation metric."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose ``monitor: task`` (the default) means the task's main validation metric.

    That is ``val/accuracy`` for single-label and pair tasks, ``val/macro_f1`` for multi-label and
    ``val/entity_f1`` for the token task, so one callback config serves every task. Any other ``monitor``
    is used as given.

    The configs set ``save_weights_only``: the file then holds the weights, the hyperparameters, the tokenizer
    and the label names (the model's ``on_save_checkpoint``), all that ``bertcls test``, ``predict``,
    ``export`` and ``convert`` read, without the optimizer state (two thirds of a full AdamW checkpoint). Resumes
    start from ``last.ckpt``, never from this one. FSDP honours the flag; under DeepSpeed Lightning ignores it
    and the engine writes its optimizer shards into the folder as well (DeepSpeed has no weights-only save).
    """

    def __init__(
        self, monitor: str | None = "task", mode: str = "max", save_on_train_epoch_end: bool | None = False, **kwargs
    ) -> None:
        # False: save at validation end, not at the training epoch's end (Lightning's choice when validating once an
        # epoch). Lightning runs checkpoint callbacks last, so a Preemption save at the epoch's end would come first
        # and stop the run before the epoch's best checkpoint was written, and without its score in last.ckpt.
        super().__init__(monitor=monitor, mode=mode, save_on_train_epoch_end=save_on_train_epoch_end, **kwargs)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.monitor == "task":
            # The model takes its task from the data module in its own setup, which runs after this one.
            task = getattr(pl_module, "task", None) or trainer.datamodule.task
            self.monitor = task.monitor
        super().setup(trainer, pl_module, stage)
