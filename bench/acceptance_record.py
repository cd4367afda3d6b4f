"""Lightning callback of ``gpu_acceptance.py``'s smoke runs: what each training batch was, one JSON line a batch.

Added to ``bertcls fit`` through the callbacks file that ``gpu_acceptance.py`` writes (this folder on
``PYTHONPATH``); the lines go to the file named by ``$BERTCLS_ACCEPTANCE_LOG``, flushed as they are written, so a
run killed with SIGKILL keeps every line of the batches it finished.
"""

from __future__ import annotations

import json
import os
from typing import Any

import lightning as L
import torch

LOG_VARIABLE = "BERTCLS_ACCEPTANCE_LOG"


def append_record(record: dict[str, Any]) -> None:
    """Append one JSON line to ``$BERTCLS_ACCEPTANCE_LOG`` (shared with ``acceptance_checkpoint.py``'s saves)."""
    with open(os.environ[LOG_VARIABLE], "a") as log:
        log.write(json.dumps(record) + "\n")


class RecordBatches(L.Callback):
    """After each training batch: the optimizer step it ended on, its source rows and its loss (``null`` for a
    batch the model skipped). On one device only (the smoke runs' setting): rank 0 writes.

    Put first in the callbacks list, it waits for the device before the other ``on_train_batch_end`` hooks run, so
    a profiler times those as the host work they are, not as the wait for the step's queued kernels.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: dict, batch_idx: int
    ) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if not trainer.is_global_zero:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        record = {
            "step": trainer.global_step,
            "rows": batch["rows"].tolist(),
            "loss": float(loss.detach().float()) if isinstance(loss, torch.Tensor) else None,
        }
        append_record(record)
