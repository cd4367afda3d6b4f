"""``model.nonfinite_loss: skip`` returns None from ``training_step``: Lightning refuses that under DeepSpeed and in
any run of several processes, at the first bad batch. bertcls refuses the setting before training instead (FSDP too,
not shown to work), naming the option, the strategy and the fix."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import run_bertcls_process, separable_frame, write_frame
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy
from test_cli_end_to_end import fit_args

from bertcls.errors import InputError
from bertcls.model.module import refuse_unsupported_skip
from bertcls.strategies import CPUDeepSpeedStrategy

SKIP = ("--model.nonfinite_loss", "skip")


@pytest.mark.parametrize(
    ("strategy", "world_size"),
    [(CPUDeepSpeedStrategy(stage=2), 1), (FSDPStrategy(), 1), (DDPStrategy(), 2)],
    ids=["deepspeed", "fsdp", "ddp-2-processes"],
)
def test_skip_is_refused_where_lightning_cannot_skip_a_batch(strategy: object, world_size: int) -> None:
    with pytest.raises(InputError, match=f"model.nonfinite_loss: skip .* uses {type(strategy).__name__} with "):
        refuse_unsupported_skip("skip", strategy, world_size)
    refuse_unsupported_skip("stop", strategy, world_size)


def test_skip_is_accepted_in_a_single_process() -> None:
    for strategy in (SingleDeviceStrategy(), DDPStrategy()):
        refuse_unsupported_skip("skip", strategy, 1)


def fit_command(folder: Path, model_dir: Path, words: list[str], *extra: object) -> list[object]:
    files = SimpleNamespace(
        train=write_frame(separable_frame(words, 64, seed=1), folder / "train.csv"),
        validation=write_frame(separable_frame(words, 32, seed=2), folder / "dev.csv"),
    )
    return fit_args(model_dir, files, "skip", 1, *SKIP, *extra)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="SKIPPED ON PURPOSE: needs DeepSpeed")
def test_the_cli_refuses_skip_under_deepspeed_before_training(
    tmp_path: Path, tiny_model_dir: Path, real_words: list[str]
) -> None:
    strategy = tmp_path / "zero2.yaml"
    strategy.write_text("class_path: bertcls.strategies.CPUDeepSpeedStrategy\ninit_args: {stage: 2}\n")
    args = fit_command(tmp_path, tiny_model_dir, real_words, "--trainer.strategy", strategy)
    done = run_bertcls_process(*args, cwd=tmp_path, env={"BERTCLS_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 1, done.stderr[-3000:]
    assert "bertcls: error: model.nonfinite_loss: skip works only in a single-process run" in done.stderr
    assert "CPUDeepSpeedStrategy with 1 process(es)" in done.stderr and "--model.nonfinite_loss stop" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("checkpoints/skip/version_0/checkpoints/*.ckpt"))


def test_the_cli_refuses_skip_in_a_run_of_two_processes(tmp_path: Path, tiny_model_dir: Path, real_words: list[str]):
    args = fit_command(
        tmp_path, tiny_model_dir, real_words, "--trainer.strategy", "ddp", "--trainer.devices", 2,
        "--trainer.accelerator", "cpu",
    )  # fmt: skip
    done = run_bertcls_process(*args, cwd=tmp_path, env={"BERTCLS_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 1, done.stderr[-3000:]
    assert "bertcls: error: model.nonfinite_loss: skip works only in a single-process run" in done.stderr
    assert "DDPStrategy with 2 process(es)" in done.stderr and "Traceback" not in done.stderr
