"""A NaN or infinite training loss: stop with the step and the rows of the batch, or skip the batch.

One bad step writes NaN into every weight, and every later step and checkpoint carries it; so the loss is
checked before its backward pass, on every step, and every rank decides alike (none may wait for the others
forever) through the step's one all-reduce (``bertcls.step_agreement``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from bertcls.errors import InputError

NonFiniteAction = Literal["stop", "skip"]
MAX_SKIPPED_IN_A_ROW = 10  # then the weights themselves are likely broken: skipping cannot help
ROWS_SHOWN = 10


class NonFiniteLossError(InputError):
    """The training loss became NaN or infinite; the message names the step, the batch's rows and the fixes."""


def describe_non_finite(loss: torch.Tensor, rows: torch.Tensor, step: int, epoch: int, batch: int, source: str) -> str:
    """Where it happened: the value, the optimizer step, the batch and its rows (counted from 1, header excluded)."""
    unique = np.unique(rows.detach().cpu().numpy()) + 1
    shown = ", ".join(str(row) for row in unique[:ROWS_SHOWN]) + (", ..." if len(unique) > ROWS_SHOWN else "")
    value = float(loss.detach().float()) if loss.numel() == 1 else "not finite"
    return (
        f"The training loss is {value} at optimizer step {step} (epoch {epoch + 1}, batch {batch}); this process's "
        f"batch holds rows {shown} of {source} (rows counted from 1, header excluded)."
    )


def stop_message(where: str, skipped_in_a_row: int) -> str:
    if skipped_in_a_row:
        return (
            f"{where} That is {skipped_in_a_row + 1} batches in a row with a non-finite loss: the weights are "
            "likely broken already, so skipping cannot help. Resume from a checkpoint written before the first one "
            "with a lower model.learning_rate."
        )
    return (
        f"{where} Usual causes: a learning rate too high for this model (model.learning_rate), fp16 overflow "
        "(use --trainer.precision bf16-mixed or 32-true), or broken examples in those rows. Checkpoints written "
        "so far are untouched: fix the cause and resume (--ckpt_path last), or set --model.nonfinite_loss skip to "
        "skip such batches (counted in train/skipped_batches)."
    )
