"""``FinalValidation``: a run whose last optimizer steps no validation has seen (``max_steps`` in an epoch,
``val_check_interval`` leaving the epoch's tail) validates once at its end; never twice at one step, never without
validation data.

In-process on Lightning's ``BoringModel`` (64 batches an epoch, one optimizer step each): seconds. The CLI's run of
the tiny BERT (best checkpoint, ``last.ckpt`` written once at the end) is in tests/test_checkpoint_policy.py.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from bertcls.callbacks import FinalValidation

pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")


class RecordValidations(L.Callback):
    """The optimizer step of every validation during fit (the sanity check not counted)."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"max_steps": 10}, [10]),  # Lightning alone: none
        ({"max_epochs": 1, "val_check_interval": 20}, [20, 40, 60, 64]),  # Lightning alone: 20, 40, 60
        ({"max_steps": 40, "val_check_interval": 20}, [20, 40]),  # step 40 validates anyway: once
        ({"max_epochs": 2}, [64, 128]),  # each epoch's end validates anyway: once
        ({"max_steps": 10, "limit_val_batches": 0}, []),  # nothing to validate on
    ],
    ids=["max-steps-in-an-epoch", "tail-after-the-last-interval", "max-steps-on-an-interval", "epoch-ends", "no-data"],
)
def test_the_end_of_training_is_validated_once(options: dict, expected: list[int], tmp_path: Path) -> None:
    recorder = RecordValidations()
    trainer = L.Trainer(
        callbacks=[FinalValidation(), recorder],
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **options,
    )
    trainer.fit(BoringModel())
    assert recorder.steps == expected
