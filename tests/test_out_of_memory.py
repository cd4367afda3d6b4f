"""Running out of memory during training ends with what ran out, the settings that decide memory and what to
change, instead of a traceback (the error is raised by a callback at a chosen step of a real fit)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from helpers import separable_frame, write_frame
from test_cli_end_to_end import fit_args, run_in

RAISE = "--trainer.callbacks+=test_out_of_memory.RunOutOfMemory"


class RunOutOfMemory(L.Callback):
    """At batch 2, the error CUDA raises (``cuda``), the CPU allocator's (``cpu``), or another one (``other``)."""

    kind = "cuda"

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, index: int) -> None:
        if index == 2:
            if RunOutOfMemory.kind == "cuda":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB.")
            if RunOutOfMemory.kind == "cpu":
                raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
            raise RuntimeError("something else broke")


@pytest.fixture
def task(real_words: list[str], tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(
        train=write_frame(separable_frame(real_words, 64, seed=1), tmp_path / "train.csv"),
        validation=write_frame(separable_frame(real_words, 32, seed=2), tmp_path / "dev.csv"),
    )


@pytest.mark.parametrize(("kind", "first_line"), [("cuda", "CUDA out of memory"), ("cpu", "can't allocate memory")])
def test_out_of_memory_names_the_settings_and_the_fixes(
    tiny_model_dir: Path, task: SimpleNamespace, tmp_path: Path, kind: str, first_line: str
) -> None:
    RunOutOfMemory.kind = kind
    exit_ = run_in(tmp_path, *fit_args(tiny_model_dir, task, "oom", 1, RAISE))
    assert isinstance(exit_, SystemExit)
    message = str(exit_)
    assert message.startswith("bertcls: error: out of memory (") and first_line in message
    assert "data.batch_size 16, data.max_length 32, trainer.precision 32-true" in message
    for fix in ("--trainer.precision bf16-mixed", "--model.gradient_checkpointing true", "accumulate_grad_batches"):
        assert fix in message


def test_other_runtime_errors_keep_their_traceback(tiny_model_dir: Path, task: SimpleNamespace, tmp_path: Path) -> None:
    RunOutOfMemory.kind = "other"
    with pytest.raises(RuntimeError, match="something else broke"):
        run_in(tmp_path, *fit_args(tiny_model_dir, task, "other", 1, RAISE))
