"""``LastCheckpoint`` that times each save and can die right after one: ``gpu_acceptance.py``'s resume checks.

Each completed save appends ``{"saved": step, "seconds": ..., "path": ...}`` to ``$BERTCLS_ACCEPTANCE_LOG``. When
the step saved is ``$BERTCLS_ACCEPTANCE_KILL_AT_STEP``, the process then sends itself SIGKILL: no clean-up, no
further save, as when a node dies, with a mid-epoch ``last.ckpt`` complete on disk.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning as L
from acceptance_record import append_record

from bertcls.callbacks.last_checkpoint import LastCheckpoint

KILL_VARIABLE = "BERTCLS_ACCEPTANCE_KILL_AT_STEP"


class TimedLastCheckpoint(LastCheckpoint):
    """``LastCheckpoint`` with each save's wall time recorded, and the kill after the save of a chosen step."""

    def save(self, trainer: L.Trainer) -> Path:
        started = time.perf_counter()
        path = super().save(trainer)
        seconds = time.perf_counter() - started
        if trainer.is_global_zero:
            append_record({"saved": trainer.global_step, "seconds": seconds, "path": str(path)})
        if os.environ.get(KILL_VARIABLE) == str(trainer.global_step):
            os.kill(os.getpid(), signal.SIGKILL)
        return path
