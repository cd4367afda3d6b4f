"""Validate at the end of a run whose last optimizer steps no validation has seen yet."""

from __future__ import annotations

from typing import Any

import lightning as L
from typing_extensions import override

from bertcls.callbacks.last_checkpoint import training_ends_after_this_batch


class FinalValidation(L.Callback):
    """At the batch after which training ends, ask Lightning to stop, so that it validates there.

    Lightning validates at each epoch's end (or every ``val_check_interval`` batches) and when a run is asked to stop
    (``trainer.should_stop``, which ``max_time`` and early stopping set), but not when ``max_steps`` ends training
    in an epoch, nor at the last batch of the last epoch when ``val_check_interval`` does not divide the epoch: the run
    would end with its last steps unvalidated (no ``val/`` metrics, no best checkpoint at all for a short run). A stop
    request at that batch gets the validation from Lightning's own loop, so the checkpoints, logs, progress counters
    and summary see an ordinary validation, and ``last.ckpt``, written at the epoch's end after it, resumes without
    repeating it. Where Lightning validates at that batch anyway, the request changes nothing (one validation).

    Nothing changes without validation data, in an epoch that ``check_val_every_n_epoch`` skips, before
    ``min_epochs`` / ``min_steps``, or when a signal stops the run (``Preemption`` saves and exits at that step, before
    any validation, as in any other step).
    """

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if training_ends_after_this_batch(trainer):
            trainer.should_stop = True
