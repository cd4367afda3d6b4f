"""When checkpoints are written and what they hold: ``LastCheckpoint`` by steps, by wall time and at epoch ends,
only at optimizer-step boundaries (DeepSpeed's own included); the best checkpoint without optimizer state, still
enough for ``bertcls test`` and ``export``; the GPU callbacks config beside the default one.

Every run is a real ``bertcls fit`` of the tiny BERT; the DeepSpeed one (CPU engine, ZeRO-2) in its own process.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import yaml
from helpers import CONFIGS, resumable_fit_args, run_bertcls_process, run_checkpoints, run_cli
from lightning.pytorch.strategies import DeepSpeedStrategy

from bertcls.callbacks import LastCheckpoint
from bertcls.errors import InputError
from bertcls.model.bundled_tokenizer import TOKENIZER_CHECKPOINT_KEY

RECORDER = "test_checkpoint_policy.RecordingLastCheckpoint"
pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated")


class RecordingLastCheckpoint(LastCheckpoint):
    """``LastCheckpoint`` that records, for each of its saves, the step and whether gradients of a partial
    accumulation were pending, into ``$BERTCLS_TEST_RECORD_DIR/saves.json``.

    Pending is observed independently of ``LastCheckpoint``'s own test: without DeepSpeed, batches trained since
    the latest ``on_before_optimizer_step`` (Lightning calls it only for real steps there); under DeepSpeed,
    whether the engine's latest ``step()`` applied an update."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches_since_step = 0
        self.records: list[dict] = []

    def on_train_batch_start(self, *args: object) -> None:
        self.batches_since_step += 1

    def on_before_optimizer_step(self, *args: object) -> None:
        self.batches_since_step = 0

    def save(self, trainer: L.Trainer) -> Path:
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            pending = not trainer.strategy.deepspeed_engine.was_step_applied()
            micro_batch = trainer.strategy.config["train_micro_batch_size_per_gpu"]
        else:
            pending, micro_batch = self.batches_since_step > 0, None
        self.records.append({"step": trainer.global_step, "pending": pending, "micro_batch": micro_batch})
        if trainer.is_global_zero:
            Path(os.environ["BERTCLS_TEST_RECORD_DIR"], "saves.json").write_text(json.dumps(self.records))
        return super().save(trainer)


def policy_args(folder: Path, model_dir: Path, words: list[str], *extra: object, **last: object) -> list[object]:
    """A 2-epoch fit whose ``LastCheckpoint`` (recording its saves) takes the init arguments ``last``."""
    args = resumable_fit_args(
        folder, model_dir, words, train_rows=200, batch_size=8, epochs=2, save_every=0, last_checkpoint_class=RECORDER
    )
    callbacks = yaml.safe_load((folder / "callbacks.yaml").read_text())
    next(entry for entry in callbacks if entry["class_path"] == RECORDER)["init_args"].update(last)
    (folder / "callbacks.yaml").write_text(yaml.safe_dump(callbacks))
    return [*args, "--experiment", "policy", *extra]


def fit_and_record(folder: Path, args: list[object], monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    monkeypatch.chdir(folder)
    monkeypatch.setenv("BERTCLS_TEST_RECORD_DIR", str(folder))
    assert run_cli(*args) is None
    return json.loads((folder / "saves.json").read_text())


# --- when ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("minutes", "expected"),
    [(1e-6, [10, 20, 25, 30, 40, 50]), (60.0, [25, 50])],
    ids=["due-at-every-clock-check", "never-due"],
)
def test_saves_by_wall_time_and_at_epoch_ends(
    minutes: float, expected: list[int], tmp_path: Path, tiny_model_dir: Path, real_words, monkeypatch
) -> None:
    """25 steps an epoch; the clocks are compared every 10 steps. Step 50 ends the run: its save is the epoch's."""
    args = policy_args(tmp_path, tiny_model_dir, real_words, every_n_minutes=minutes)
    saves = fit_and_record(tmp_path, args, monkeypatch)
    assert [save["step"] for save in saves] == expected


def test_saves_only_at_step_boundaries_with_accumulation(
    tmp_path: Path, tiny_model_dir: Path, real_words, monkeypatch
) -> None:
    """25 batches an epoch in steps of 2 (the 13th step of 1 batch): a save every 2 steps, none mid-step (the
    run's first batch, at step 0 still, is one)."""
    args = policy_args(
        tmp_path, tiny_model_dir, real_words, "--trainer.accumulate_grad_batches", 2, every_n_train_steps=2
    )
    saves = fit_and_record(tmp_path, args, monkeypatch)
    assert [save["step"] for save in saves] == [2, 4, 6, 8, 10, 12, 13, 14, 16, 18, 20, 22, 24, 26]
    assert not any(save["pending"] for save in saves)


def test_max_steps_in_an_epoch_ends_with_a_validation_and_a_best_checkpoint(
    tmp_path: Path, tiny_model_dir: Path, real_words, monkeypatch
) -> None:
    """25 steps an epoch, stopped at 15 (FinalValidation): val/ metrics and a best checkpoint of step 15, and
    last.ckpt of step 15 written once, after that validation (a resume from it has nothing left to do)."""
    args = policy_args(tmp_path, tiny_model_dir, real_words, "--trainer.max_steps", 15, every_n_train_steps=5)
    saves = fit_and_record(tmp_path, args, monkeypatch)
    assert [save["step"] for save in saves] == [5, 10, 15]
    folder = run_checkpoints(tmp_path, "policy")
    assert [path.name for path in folder.glob("best-*.ckpt")] == ["best-epoch00-step15.ckpt"]
    metrics = pd.read_csv(folder.parent / "metrics.csv").dropna(subset=["val/accuracy"])
    assert metrics["step"].tolist() == [14]  # Lightning logs the validation of step 15 at index 14


@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="SKIPPED ON PURPOSE: needs DeepSpeed (the optional extra): pip install 'bertcls[deepspeed]'",
)
def test_deepspeed_saves_at_its_own_accumulation_boundaries(tmp_path: Path, tiny_model_dir: Path, real_words) -> None:
    """7 batches an epoch, accumulation 2: DeepSpeed steps where Lightning counts a step, closing each epoch's
    partial accumulation too, and every save is at one of those steps. The strategy is
    configs/strategy/deepspeed-zero2.yaml's, on the CPU: its per-GPU batch size for DeepSpeed comes from
    data.batch_size."""
    zero2 = yaml.safe_load((CONFIGS / "strategy" / "deepspeed-zero2.yaml").read_text())
    zero2["class_path"] = "bertcls.strategies.CPUDeepSpeedStrategy"
    (tmp_path / "strategy.yaml").write_text(yaml.safe_dump(zero2))
    args = policy_args(tmp_path, tiny_model_dir, real_words, every_n_train_steps=1)
    args = [*args, "--trainer.accumulate_grad_batches", 2, "--trainer.strategy", tmp_path / "strategy.yaml"]
    args[args.index("--data.batch_size") + 1] = 29  # 200 rows: 7 batches
    done = run_bertcls_process(*args, cwd=tmp_path, env={"BERTCLS_TEST_RECORD_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    saves = json.loads((tmp_path / "saves.json").read_text())
    assert [save["step"] for save in saves] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert not any(save["pending"] for save in saves)
    assert {save["micro_batch"] for save in saves} == {29}


@pytest.mark.parametrize(
    ("option", "value"), [("every_n_minutes", 0), ("every_n_minutes", -5), ("every_n_train_steps", -1)]
)
def test_bad_save_interval_is_refused(option: str, value: float) -> None:
    with pytest.raises(InputError, match=f"LastCheckpoint.{option} must be .* got {value}"):
        LastCheckpoint(**{option: value})


# --- what ------------------------------------------------------------------------------------------------------
def test_best_checkpoint_holds_weights_only_and_still_tests_and_exports(
    tmp_path: Path, tiny_model_dir: Path, real_words, monkeypatch
) -> None:
    args = resumable_fit_args(
        tmp_path, tiny_model_dir, real_words, train_rows=64, batch_size=16, epochs=1, save_every=0
    )
    monkeypatch.chdir(tmp_path)
    assert run_cli(*args, "--experiment", "best") is None
    folder = run_checkpoints(tmp_path, "best")
    (best,) = folder.glob("best-*.ckpt")
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in checkpoint and "lr_schedulers" not in checkpoint
    assert {"state_dict", "hyper_parameters", TOKENIZER_CHECKPOINT_KEY} <= checkpoint.keys()
    assert best.stat().st_size < 0.5 * (folder / "last.ckpt").stat().st_size  # AdamW: two moments per weight
    test_args = ["--data.test_file", tmp_path / "dev.csv", "--trainer.logger", "false"]
    assert run_cli("test", "--ckpt_path", best, *test_args) is None
    refused = run_cli(*args, "--experiment", "resumed-from-best", "--ckpt_path", best)
    assert isinstance(refused, SystemExit) and "holds the weights only" in str(refused.code), refused
    pytest.importorskip("onnxruntime")
    from bertcls.commands.export import export

    assert export([str(best), "--output", str(tmp_path / "exported"), "--onnx-only"])["onnx_difference"] < 1e-4


def test_gpu_callbacks_differ_from_the_default_ones_only_in_last_checkpoint_and_tf32() -> None:
    default = yaml.safe_load((CONFIGS / "callbacks" / "default.yaml").read_text())
    gpu = yaml.safe_load((CONFIGS / "callbacks" / "gpu.yaml").read_text())
    last = next(entry for entry in gpu if entry["class_path"].endswith(".LastCheckpoint"))
    assert last["init_args"] == {"every_n_train_steps": 0, "every_n_minutes": 30}
    assert [entry for entry in gpu if entry is not last and not entry["class_path"].endswith(".TF32Matmul")] == [
        entry for entry in default if not entry["class_path"].endswith(".LastCheckpoint")
    ]
    for trainer in ("trainer/gpu.yaml", "recipes/bert-large-ddp.yaml", "recipes/bert-large-deepspeed.yaml"):
        config = yaml.safe_load((CONFIGS / trainer).read_text())
        assert config.get("trainer", config)["callbacks"] == "../callbacks/gpu.yaml", trainer
