"""DeepSpeed (ZeRO) as bertcls trains with it: gradient accumulation decided by Lightning's loop."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightning.pytorch.strategies import DeepSpeedStrategy as LightningDeepSpeedStrategy
from typing_extensions import override

from bertcls.errors import InputError
from bertcls.lightning_internals import at_step_boundary


class DeepSpeedStrategy(LightningDeepSpeedStrategy):
    """Lightning's ``DeepSpeedStrategy``, accumulating gradients over the batches Lightning's loop does.

    Left to itself, DeepSpeed steps after every ``accumulate_grad_batches`` micro-batches by its own count, which
    runs on across epochs and is not restored on resume, and Lightning then counts no step for an epoch's last,
    partial accumulation: with 7 batches an epoch and 2 to accumulate, the engine steps after batches 0, 2, 4, 6 of
    the second epoch where Lightning counts 1, 3, 5 (the schedule, ``global_step`` and checkpoint timing follow
    Lightning's count). Here the loop decides, as under every other strategy: a step after every
    ``accumulate_grad_batches`` batches and one closing each epoch; the engine is told before each batch's
    forward and backward whether that batch ends a step. The loss is divided by ``accumulate_grad_batches`` once,
    by Lightning's loop as for every strategy, not a second time by the engine.
    """

    @property
    @override
    def handles_gradient_accumulation(self) -> bool:
        return False  # Lightning's loop decides (and counts) where a step is taken

    @override
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Lightning calls this after counting the batch as ready, so the loop's answer is this batch's.
        self.deepspeed_engine.set_gradient_accumulation_boundary(at_step_boundary(self.lightning_module.trainer))

    @override
    def backward(self, closure_loss: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        # Lightning's loop has divided the loss by accumulate_grad_batches already; the engine would divide it again
        # (halving gradients, their logged norm and what gradient_clip_val clips, with 2 batches to accumulate).
        return super().backward(closure_loss, optimizer, *args, scale_wrt_gas=False, **kwargs)

    @contextmanager
    @override
    def block_backward_sync(self) -> Iterator[None]:
        # Lightning's would enter the engine's no_sync() (the engine looks like DDP to it), which ZeRO-2 and 3
        # refuse. Not needed: the boundary flag keeps the engine from reducing gradients early where it can.
        yield


def refuse_drifting_accumulation(strategy: object, accumulate_grad_batches: int) -> None:
    """Refuse Lightning's own DeepSpeed class (``--trainer.strategy deepspeed_stage_2``) with accumulation: its steps
    would drift from Lightning's count, which the schedule and the checkpoints follow (see ``DeepSpeedStrategy``)."""
    if (
        isinstance(strategy, LightningDeepSpeedStrategy)
        and not isinstance(strategy, DeepSpeedStrategy)
        and accumulate_grad_batches > 1
    ):
        raise InputError(
            f"trainer.strategy is Lightning's {type(strategy).__name__} with trainer.accumulate_grad_batches "
            f"{accumulate_grad_batches}: DeepSpeed would then count accumulation steps by itself, across epochs, and "
            "its updates drift from the learning-rate schedule and the checkpoints. Use one of bertcls' DeepSpeed "
            "files, e.g. --trainer.strategy configs/strategy/deepspeed-zero2.yaml (bertcls.deepspeed_strategy)."
        )
