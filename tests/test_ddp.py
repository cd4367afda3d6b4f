"""Two-process DDP on the CPU (gloo), run by Lightning itself: ``bertcls fit --trainer.devices 2 --trainer.strategy
ddp`` as a subprocess (Lightning re-executes the command for rank 1), on the tiny BERT; then ``validate`` and
``test`` of its checkpoint.

It proves the promises that multi-GPU training rests on, with the same code paths as on GPUs:

* the bucketed sampler shards each epoch: the ranks' batches are disjoint, cover every training row exactly
  once, come in equal numbers, and optimizer step ``k`` holds the examples of step ``k`` of a one-process run at
  the same global batch size;
* validation metrics computed across ranks are those of one process evaluating the same checkpoint;
* the ranks' weights stay bitwise identical;
* what rank 0 alone does (the end-of-fit summary, the test report) waits on no collective.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from helpers import CONFIGS, run_bertcls_process, separable_frame, write_frame
from transformers import BertModel
from wandb_files import offline_runs

TRAIN_ROWS, VALIDATION_ROWS, EPOCHS = 200, 70, 2
BATCH_SIZE = 8  # per rank: global batch 16, 13 steps of 15-16 examples, shared 7/8 or 8/8
STEPS = math.ceil(TRAIN_ROWS / (2 * BATCH_SIZE))
# Validation (eval batch 2 x 8 per rank): 3 steps of 24/23/23 examples, so the ranks hold uneven shares.
METRICS = ("val/accuracy", "val/macro_f1", "val/f1_positive", "val/loss")
WANDB_LOGGER = CONFIGS / "logger" / "wandb.yaml"  # offline here: no API key
RECORDED_VALIDATIONS = [("ddp", "fit", 2), ("validate-1", "validate", 1), ("validate-2", "validate", 2)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, real_words: list[str]) -> SimpleNamespace:
    """A 2-rank DDP fit, the same fit in one process at the same global batch size, then ``validate`` of the DDP
    run's ``last.ckpt`` with one process and with two, and ``test`` with two on the validation file."""
    folder = tmp_path_factory.mktemp("ddp")
    train = write_frame(separable_frame(real_words, TRAIN_ROWS, seed=1), folder / "train.csv")
    dev = write_frame(separable_frame(real_words, VALIDATION_ROWS, seed=2), folder / "dev.csv")
    common = [
        "--data.max_length", "32", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    fit = [
        "fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", tiny_model_dir,
        "--model.learning_rate", "1e-3", "--data.train_file", train, "--data.validation_file", dev,
        "--data.where", "null", "--trainer.max_epochs", EPOCHS, *common,
    ]  # fmt: skip
    # `--trainer.strategy ddp` spelled out (the same DDPStrategy, started by re-running the command), to set a
    # short collective time-out: ranks that wait on different collectives fail in 2 minutes, not 30.
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "lightning.pytorch.strategies.DDPStrategy"]
    ddp += ["--trainer.strategy.timeout", "0:02:00"]
    single = ["--trainer.devices", "1"]
    record = "--trainer.callbacks+=helpers.RecordRank"

    def run(name: str, *args: object) -> str:
        env = {"BERTCLS_CACHE": str(folder / "cache"), "BERTCLS_TEST_RECORD_DIR": str(folder / "records" / name)}
        result = run_bertcls_process(*args, "--experiment", name, cwd=folder, env=env)
        assert result.returncode == 0, f"bertcls {name} failed:\n{result.stderr[-5000:]}"
        return result.stdout + result.stderr

    outputs = {
        "ddp": run("ddp", *fit, *ddp, record, "--data.batch_size", BATCH_SIZE, "--trainer.logger", WANDB_LOGGER),
        "single": run("single", *fit, *single, record, "--data.batch_size", 2 * BATCH_SIZE),
    }
    last = folder / "checkpoints" / "ddp" / "version_0" / "checkpoints" / "last.ckpt"
    validate = ["validate", "--ckpt_path", last, "--data.validation_file", dev, "--data.batch_size", BATCH_SIZE]
    outputs["validate-1"] = run("validate-1", *validate, *common, *single, record)
    outputs["validate-2"] = run("validate-2", *validate, *common, *ddp, record)
    test = ["test", "--ckpt_path", last, "--data.test_file", dev, "--data.batch_size", BATCH_SIZE]
    outputs["test-2"] = run("test-2", *test, *common, *ddp)
    return SimpleNamespace(folder=folder, last=last, records=folder / "records", outputs=outputs)


def load(runs: SimpleNamespace, name: str, fn: str, world_size: int) -> list[dict]:
    """Each rank's ``helpers.RecordRank`` file of one run."""
    records = runs.records / name
    ranks = [torch.load(records / f"{fn}-rank{rank}.pt", weights_only=True) for rank in range(world_size)]
    assert sorted(path.name for path in records.iterdir()) == [f"{fn}-rank{rank}.pt" for rank in range(world_size)]
    assert [rank["world_size"] for rank in ranks] == [world_size] * world_size
    return ranks


def test_the_sampler_shards_every_epoch_as_one_process_orders_it(runs: SimpleNamespace) -> None:
    rank0, rank1 = (rank["epochs"] for rank in load(runs, "ddp", "fit", 2))
    (single,) = (rank["epochs"] for rank in load(runs, "single", "fit", 1))
    assert len(rank0) == len(rank1) == len(single) == EPOCHS
    for epoch in range(EPOCHS):
        first, second, whole = rank0[epoch], rank1[epoch], single[epoch]
        assert len(first) == len(second) == len(whole) == STEPS, epoch
        seen0 = [row for batch in first for row in batch]
        seen1 = [row for batch in second for row in batch]
        assert not set(seen0) & set(seen1), epoch
        assert sorted(seen0 + seen1) == list(range(TRAIN_ROWS)), epoch
        for step, (a, b, reference) in enumerate(zip(first, second, whole, strict=True)):
            assert sorted(a + b) == sorted(reference), (epoch, step)
            assert abs(len(a) - len(b)) <= 1 and max(len(a), len(b)) <= BATCH_SIZE, (epoch, step, a, b)
    assert rank0[0] != rank0[1], "the shuffle must change every epoch"


def logged_validation(run_folder: Path) -> pd.Series:
    """The last validation row of a run's ``metrics.csv``."""
    metrics = pd.read_csv(run_folder / "metrics.csv")
    return metrics.dropna(subset=["val/accuracy"]).iloc[-1]


def test_metrics_across_ranks_equal_one_process_on_the_same_checkpoint(runs: SimpleNamespace) -> None:
    logged = logged_validation(runs.folder / "checkpoints" / "ddp" / "version_0")
    assert logged["epoch"] == EPOCHS - 1
    expected = {name: float(logged[name]) for name in METRICS}
    # What each rank's trainer.callback_metrics held: at the DDP fit's last validation, and after validate.
    fit, one, two = (load(runs, name, fn, size) for name, fn, size in RECORDED_VALIDATIONS)
    seen = {"fit rank 0": fit[0], "fit rank 1": fit[1], "validate": one[0], "validate rank 0": two[0]}
    seen["validate rank 1"] = two[1]
    for where, record in seen.items():
        values = record["metrics"]
        for name in ("val/accuracy", "val/macro_f1", "val/f1_positive"):  # from counts: exact
            assert values[name] == expected[name], (where, name, values[name], expected[name])
        assert values["val/loss"] == pytest.approx(expected["val/loss"], rel=1e-6, abs=1e-7), where
    # validate logs too, into a new run folder of its own; so does test (2 ranks, on the same file).
    for name in ("validate-1", "validate-2"):
        logged_validate = logged_validation(runs.folder / "checkpoints" / name / "version_0")
        for metric in ("val/accuracy", "val/macro_f1"):
            assert float(logged_validate[metric]) == expected[metric], (name, metric)
        assert float(logged_validate["val/loss"]) == pytest.approx(expected["val/loss"], rel=1e-6, abs=1e-7), name
    logged_test = pd.read_csv(runs.folder / "checkpoints" / "test-2" / "version_0" / "metrics.csv").iloc[-1]
    for metric in ("accuracy", "macro_f1", "f1_positive"):
        assert float(logged_test[f"test/{metric}"]) == expected[f"val/{metric}"], metric


def test_rank_zero_output_waits_on_no_other_rank(runs: SimpleNamespace) -> None:
    """What rank 0 alone prints after fit (the summary) and test (the report) must involve no collective:
    the other rank has moved on (gloo: a crash; NCCL: a hang until the time-out)."""
    assert f"logs and config: {Path('checkpoints', 'ddp', 'version_0')}" in runs.outputs["ddp"]
    assert runs.outputs["test-2"].count("Test classification report") == 1
    assert (runs.folder / "checkpoints" / "test-2" / "version_0" / "test_confusion_matrix.png").is_file()


def test_only_rank_zero_logs_to_wandb(runs: SimpleNamespace) -> None:
    """One W&B run for the two ranks, in the run folder, with the figures of the CSV log (which rank 0 writes)."""
    run_folder = runs.folder / "checkpoints" / "ddp" / "version_0"
    wandb_folders = [path for path in runs.folder.rglob("wandb") if path.is_dir()]
    assert wandb_folders == [run_folder / "wandb"]
    (run,) = offline_runs(run_folder / "wandb")
    assert run.config["run"]["hardware"]["world_size"] == 2
    metrics = pd.read_csv(run_folder / "metrics.csv")
    assert run.values("val/accuracy") == pytest.approx(metrics["val/accuracy"].dropna().tolist(), rel=1e-6)
    assert run.values("train/loss") == pytest.approx(metrics["train/loss"].dropna().tolist(), rel=1e-6)
    assert run.values("speed/samples_per_sec")  # summed over both ranks (one all-reduce per window)


def test_the_ranks_weights_stay_bitwise_identical(runs: SimpleNamespace, tiny_model_dir: Path) -> None:
    rank0, rank1 = (rank["state_dict"] for rank in load(runs, "ddp", "fit", 2))
    saved = torch.load(runs.last, map_location="cpu", weights_only=True)["state_dict"]
    assert rank0.keys() == rank1.keys() == saved.keys()
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), name
        assert torch.equal(tensor, saved[name]), name  # last.ckpt (written by rank 0) is the final state
    # Not trivially equal: training moved every encoder tensor away from the initial weights (no pooler here).
    initial = BertModel.from_pretrained(tiny_model_dir).state_dict()
    initial = {f"encoder.{name}": tensor for name, tensor in initial.items()}
    encoder = [name for name in rank0 if name.startswith("encoder.")]
    assert len(encoder) > 30 and set(encoder) <= initial.keys()
    assert [name for name in encoder if torch.equal(rank0[name], initial[name])] == []
