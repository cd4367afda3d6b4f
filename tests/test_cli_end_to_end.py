"""``bertcls fit / test / predict`` end to end, in-process, on the tiny BERT with the real WordPiece vocabulary.

The task is separable by construction (cue words such as "excellent" / "awful" / "average" among random
real words), with string labels, so a few epochs must reach high validation accuracy: proof that gradients
flow through encoder and head. The quickstart config is used as-is with the model, data and epochs
overridden; outputs go to ./checkpoints under a temporary working directory.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CONFIGS, ProbeLogits, RecordFirstBatches, RecordSteps, run_cli, separable_frame, write_frame

from bertcls.model.module import BertClassifier

LABELS = ("pos", "neg", "neutral")
TRAIN_ROWS, VALIDATION_ROWS, TEST_ROWS = 450, 150, 150
BATCH_SIZE = 16
STEPS_PER_EPOCH = math.ceil(TRAIN_ROWS / BATCH_SIZE)  # 29
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = [
    # Expected in these runs: resuming into an existing folder, and test/predict built from the checkpoint alone.
    pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty"),
    pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used to create"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory, real_words: list[str]) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("task")
    test = separable_frame(real_words, TEST_ROWS, seed=3, labels=LABELS)
    return SimpleNamespace(
        train=write_frame(separable_frame(real_words, TRAIN_ROWS, seed=1, labels=LABELS), folder / "train.csv"),
        validation=write_frame(separable_frame(real_words, VALIDATION_ROWS, seed=2, labels=LABELS), folder / "dev.csv"),
        test=write_frame(test, folder / "test.csv"),
        predict=write_frame(test[["text"]], folder / "predict.csv"),
        test_frame=test,
    )


def fit_args(model_dir: Path, task: SimpleNamespace, experiment: str, epochs: int, *extra: object) -> list[object]:
    return [
        "fit",
        "--config",
        CONFIGS / "quickstart.yaml",
        "--model.model_name",
        model_dir,
        "--model.learning_rate",
        "3e-3",
        "--data.train_file",
        task.train,
        "--data.validation_file",
        task.validation,
        "--data.where",
        "null",
        "--data.max_length",
        "32",
        "--data.batch_size",
        BATCH_SIZE,
        "--trainer.max_epochs",
        epochs,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--experiment",
        experiment,
        *extra,
    ]


def run_in(folder: Path, *args: object) -> SystemExit | None:
    """Run the CLI with ``folder`` as working directory and its own cache (for module-scoped runs)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("BERTCLS_CACHE", str(folder / "cache"))
        patch.delenv("PL_GLOBAL_SEED", raising=False)
        return run_cli(*args)


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def validation_accuracy(metrics: pd.DataFrame) -> pd.Series:
    return metrics.dropna(subset=["val/accuracy"]).set_index("epoch")["val/accuracy"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, task: SimpleNamespace) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("fit")
    ProbeLogits.records.clear()
    RecordFirstBatches.rows.clear()
    callbacks = ("--trainer.callbacks+=helpers.ProbeLogits", "--trainer.callbacks+=helpers.RecordFirstBatches")
    exit_ = run_in(folder, *fit_args(tiny_model_dir, task, "e2e", 3, *callbacks))
    assert exit_ is None, exit_
    version = folder / "checkpoints" / "e2e" / "version_0"
    (best,) = (version / "checkpoints").glob("best-*.ckpt")
    return SimpleNamespace(
        folder=folder,
        version=version,
        best=best,
        metrics=pd.read_csv(version / "metrics.csv"),
        probes=dict(ProbeLogits.records),
        first_batches=list(RecordFirstBatches.rows),
    )


def test_fit_learns_the_separable_task(trained: SimpleNamespace) -> None:
    accuracy = validation_accuracy(trained.metrics)
    assert accuracy.index.tolist() == [0, 1, 2]
    assert accuracy.iloc[-1] >= 0.95
    losses = trained.metrics["train/loss"].dropna()
    assert losses.iloc[-1] < 0.5 * losses.iloc[0]
    assert (trained.version / "config.yaml").is_file()
    checkpoint = torch.load(trained.best, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["label_names"] == ["neg", "neutral", "pos"]  # sorted string labels
    assert checkpoint["hyper_parameters"]["encoder_config"]["hidden_size"] == 32
    # The best checkpoint is the first epoch with the highest validation accuracy.
    best_epoch = int(accuracy.idxmax())
    assert checkpoint["epoch"] == best_epoch
    assert checkpoint["global_step"] == STEPS_PER_EPOCH * (best_epoch + 1)


# Lightning calls set_epoch only on dataloader.sampler and dataloader.batch_sampler.sampler, never on the
# batch sampler itself: without LengthBucketBatchSampler.sampler every epoch would repeat the same batches.
def test_training_batches_are_reshuffled_every_epoch(trained: SimpleNamespace) -> None:
    """Each training epoch of a real fit starts with a different batch."""
    first_batches = trained.first_batches
    assert len(first_batches) == 3
    assert all(1 <= len(rows) <= BATCH_SIZE for rows in first_batches)
    assert len({tuple(rows) for rows in first_batches}) == 3


def test_reloaded_checkpoint_gives_identical_logits(trained: SimpleNamespace) -> None:
    checkpoint = torch.load(trained.best, map_location="cpu", weights_only=True)
    batch, logits = trained.probes[checkpoint["global_step"]]
    model = BertClassifier.load_from_checkpoint(trained.best, map_location="cpu").eval()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][name]), name
    with torch.no_grad():
        reloaded = model(batch)
    assert torch.equal(reloaded, logits)
    assert (reloaded.argmax(-1) == batch["labels"]).float().mean() >= 0.9


def test_test_command_needs_only_checkpoint_and_test_file(
    trained: SimpleNamespace, task: SimpleNamespace, cli, run_dir: Path, lightning_messages: list[str]
) -> None:
    exit_ = cli(
        "test",
        "--ckpt_path",
        trained.best,
        "--data.test_file",
        task.test,
        "--trainer.logger",
        "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir",
        "logs",
        "--trainer.enable_progress_bar",
        "false",
    )
    assert exit_ is None, exit_
    (report,) = [message for message in lightning_messages if "Test classification report" in message]
    rows = {line.split()[0]: line.split()[1:] for line in report.splitlines()[2:] if line.strip()}
    assert {"neg", "neutral", "pos", "accuracy"} <= set(rows)
    assert [int(rows[name][-1]) for name in ("neg", "neutral", "pos")] == [50, 50, 50]
    report_accuracy = float(rows["accuracy"][0])
    logged = pd.read_csv(run_dir / "logs" / "default" / "version_0" / "metrics.csv").ffill().iloc[-1]
    assert logged["test/accuracy"] == pytest.approx(report_accuracy, abs=5e-5)
    for name in ("neg", "neutral", "pos"):  # per-class metrics are logged too, and agree with the report
        precision, recall, f1 = (float(value) for value in rows[name][:3])
        assert logged[f"test/precision/{name}"] == pytest.approx(precision, abs=5e-5)
        assert logged[f"test/recall/{name}"] == pytest.approx(recall, abs=5e-5)
        assert logged[f"test/f1/{name}"] == pytest.approx(f1, abs=5e-5)
    assert report_accuracy >= 0.95
    image = run_dir / "logs" / "default" / "version_0" / "test_confusion_matrix.png"
    assert image.read_bytes()[:8] == PNG_MAGIC


def predict_args(checkpoint: Path, predict_file: Path, output: Path) -> list[object]:
    """``bertcls predict`` from a checkpoint alone, without a logger."""
    return [
        "predict",
        "--ckpt_path",
        checkpoint,
        "--data.predict_file",
        predict_file,
        "--predictions.output_file",
        output,
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]


def read_predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_writes_reloaded_models_probabilities(
    trained: SimpleNamespace, task: SimpleNamespace, cli, run_dir: Path, minilm_tokenizer
) -> None:
    outputs = [run_dir / "first.jsonl", run_dir / "second.jsonl"]
    for output in outputs:
        exit_ = cli(*predict_args(trained.best, task.predict, output))
        assert exit_ is None, exit_
    assert outputs[0].read_text() == outputs[1].read_text(), "predictions are reproducible"
    records = read_predictions(outputs[0])
    assert [record["row"] for record in records] == list(range(TEST_ROWS))

    model = BertClassifier.load_from_checkpoint(trained.best, map_location="cpu").eval()
    texts = task.test_frame["text"].tolist()
    encoded = minilm_tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(dict(encoded)).softmax(-1).numpy()
    written = np.array([[record["probabilities"][name] for name in model.hparams.label_names] for record in records])
    np.testing.assert_allclose(written, expected, atol=1e-6, rtol=0)  # written rounded to 6 decimals
    predicted = [record["label"] for record in records]
    assert predicted == [model.hparams.label_names[index] for index in expected.argmax(-1)]
    assert np.mean(np.array(predicted) == task.test_frame["label"].to_numpy()) >= 0.95


def test_checkpoint_alone_predicts_after_the_model_folder_is_gone(
    tiny_model_dir: Path, task: SimpleNamespace, cli, run_dir: Path, tmp_path: Path
) -> None:
    """The tokenizer travels inside the checkpoint; the architecture is in its hyperparameters."""
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "my-model")
    fit = fit_args(model_dir, task, "portable", 1, "--trainer.limit_train_batches", "2")
    assert cli(*fit) is None
    last = run_dir / "checkpoints" / "portable" / "version_0" / "checkpoints" / "last.ckpt"
    shutil.rmtree(model_dir)
    output = run_dir / "predictions.jsonl"
    (run_dir / "config.yaml").write_text("my own file\n")
    exit_ = cli(*predict_args(last, task.predict, output))
    assert exit_ is None, exit_
    assert len(read_predictions(output)) == TEST_ROWS
    # Without a logger there is no run folder: the resolved config is not written over ./config.yaml.
    assert (run_dir / "config.yaml").read_text() == "my own file\n"


def test_unknown_model_name_ends_the_command_with_a_message(cli, run_dir: Path, task: SimpleNamespace) -> None:
    exit_ = cli(*fit_args(run_dir / "no-such-model", task, "missing", 1))
    assert exit_ is not None
    message = str(exit_.code)
    # A model folder that does not exist is refused with the options, before any data is read.
    assert message.startswith("bertcls: error: model.model_name") and "no such folder" in message
    assert "no-such-model" in message


def test_data_error_ends_the_command_with_a_message(
    task: SimpleNamespace, tiny_model_dir: Path, cli, run_dir: Path, tmp_path: Path
) -> None:
    validation = pd.read_csv(task.validation).head(10)
    validation.loc[6, "label"] = "sarcastic"
    bad = write_frame(validation, tmp_path / "bad.csv")
    exit_ = cli(*fit_args(tiny_model_dir, task, "bad", 1, "--data.validation_file", bad))
    assert exit_ is not None
    message = str(exit_.code)
    assert message.startswith("bertcls: data error:")
    assert str(bad) in message and "'sarcastic'" in message and "row 7" in message


# --- resuming: fit --ckpt_path last ---------------------------------------------------------------
def test_resume_without_a_previous_run_exits_with_a_clear_message(
    task: SimpleNamespace, tiny_model_dir: Path, cli, run_dir: Path
) -> None:
    exit_ = cli(*fit_args(tiny_model_dir, task, "never-ran", 1, "--ckpt_path", "last"))
    assert exit_ is not None
    message = str(exit_.code)
    assert message.startswith("bertcls: error: --ckpt_path last: no last.ckpt under"), message
    assert str(Path("checkpoints") / "never-ran") in message and "Check --experiment" in message
    assert not (run_dir / "checkpoints" / "never-ran").exists()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, task: SimpleNamespace) -> SimpleNamespace:
    """One epoch, then ``--ckpt_path last`` with max_epochs 2 (same experiment)."""
    folder = tmp_path_factory.mktemp("resume")
    RecordSteps.runs.clear()
    record = "--trainer.callbacks+=helpers.RecordSteps"
    assert run_in(folder, *fit_args(tiny_model_dir, task, "resume", 1, record)) is None
    assert run_in(folder, *fit_args(tiny_model_dir, task, "resume", 2, record, "--ckpt_path", "last")) is None
    return SimpleNamespace(folder=folder, runs=list(RecordSteps.runs))


def test_resume_continues_the_latest_run_in_its_version_folder(resumed: SimpleNamespace) -> None:
    first, second = resumed.runs
    assert first["start_step"] == 0 and first["end_step"] == STEPS_PER_EPOCH
    assert second["start_epoch"] == 1, "the finished epoch is not trained again"
    assert second["start_step"] == STEPS_PER_EPOCH, "global_step continues"
    assert second["end_step"] == 2 * STEPS_PER_EPOCH, "the extra epoch was trained"
    assert Path(second["log_dir"]).resolve() == Path(first["log_dir"]).resolve()
    versions = sorted(path.name for path in (resumed.folder / "checkpoints" / "resume").iterdir())
    assert versions == ["version_0"]


# Lightning's own CSVLogger deletes metrics.csv when a run logs into an existing version folder
# (bertcls.loggers.CSVLogger appends instead).
def test_resume_keeps_the_metrics_of_earlier_epochs(resumed: SimpleNamespace) -> None:
    """The version folder's metrics.csv covers every epoch, before and after the resume."""
    version = resumed.folder / "checkpoints" / "resume" / "version_0"
    metrics = pd.concat([pd.read_csv(path) for path in sorted(version.glob("metrics*.csv"))], ignore_index=True)
    assert sorted(validation_accuracy(metrics).index) == [0, 1]


# Lightning 2.6's ModelCheckpoint(save_last=True) writes last.ckpt only when a top-k checkpoint is saved at the
# same step, so last.ckpt would be a copy of the best one; bertcls.callbacks.LastCheckpoint writes it instead.
def test_last_checkpoint_holds_the_final_state_when_accuracy_stops_improving(
    task: SimpleNamespace, tiny_model_dir: Path, cli, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Learning rate 0: validation accuracy is the same every epoch, so only the first epoch is "best".
    exit_ = cli(*fit_args(tiny_model_dir, task, "plateau", 2, "--model.learning_rate", "0"))
    assert exit_ is None, exit_
    folder = Path("checkpoints") / "plateau" / "version_0"
    last = run_dir / folder / "checkpoints" / "last.ckpt"
    assert checkpoint_step(last) == 2 * STEPS_PER_EPOCH
    (best,) = (run_dir / folder / "checkpoints").glob("best-*.ckpt")
    assert checkpoint_step(best) == STEPS_PER_EPOCH
    # The end-of-fit summary names both checkpoints and the run folder, and shows the validation accuracy.
    summary = capsys.readouterr().out.split("bertcls fit finished")[-1]
    accuracy = validation_accuracy(pd.read_csv(run_dir / folder / "metrics.csv")).iloc[0]
    assert f"best checkpoint (val/accuracy = {accuracy:.4f}): {folder / 'checkpoints' / best.name}" in summary
    assert f"last checkpoint: {folder / 'checkpoints' / 'last.ckpt'}" in summary
    assert f"logs and config: {folder}" in summary


def test_balanced_class_weights_come_from_the_training_labels_and_reload(
    task: SimpleNamespace, tiny_model_dir: Path, cli, run_dir: Path, tmp_path: Path
) -> None:
    """Inverse-frequency weights are computed at fit and kept in the checkpoint (load_from_checkpoint works)."""
    train = pd.read_csv(task.train)
    train = pd.concat([train[train["label"] != "pos"], train[train["label"] == "pos"].head(30)])  # 150/150/30
    imbalanced = write_frame(train, tmp_path / "imbalanced.csv")
    extra = ("--data.train_file", imbalanced, "--model.class_weights", "balanced", "--trainer.limit_train_batches", "3")
    assert cli(*fit_args(tiny_model_dir, task, "balanced", 1, *extra)) is None
    (best,) = (run_dir / "checkpoints" / "balanced" / "version_0" / "checkpoints").glob("best-*.ckpt")
    model = BertClassifier.load_from_checkpoint(best, map_location="cpu")
    assert model.hparams.label_names == ["neg", "neutral", "pos"]
    expected = torch.tensor([330 / (3 * 150), 330 / (3 * 150), 330 / (3 * 30)])
    torch.testing.assert_close(model.head.loss_weights, expected)
