"""``bertcls convert``: a checkpoint of ``bertcls fit`` to one plain checkpoint (``--to``) and to a Hugging Face
model folder (``--hf-folder``), from a plain ``.ckpt`` file or from a DeepSpeed ZeRO checkpoint folder.

Every checkpoint here comes from a real, short ``bertcls fit`` of the tiny BERT. The ZeRO ones are written by
Lightning's own ``DeepSpeedStrategy`` and DeepSpeed's engine on the CPU (``bertcls.strategies.CPUDeepSpeedStrategy``
only lifts Lightning's CUDA-only guard), each run in its own process (DeepSpeed's process group and globals outlive
a run); those tests need the optional extra and skip without it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from helpers import ProbeLogits, run_bertcls_process, separable_frame, write_frame
from safetensors import safe_open
from test_cli_end_to_end import fit_args, read_predictions, run_in
from test_optimization import RecordLearningRates, assert_schedule_ends_at_the_last_step
from transformers import AutoModel, AutoTokenizer

from bertcls.commands import convert
from bertcls.model.bundled_tokenizer import TOKENIZER_CHECKPOINT_KEY
from bertcls.model.encoder import load_encoder
from bertcls.model.module import BertClassifier

TRAIN_ROWS, BATCH_SIZE, ACCUMULATE = 112, 16, 2  # 7 batches an epoch: the last accumulation is partial
LABELS = ("pos", "neg", "neutral")
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
NEEDS_DEEPSPEED = pytest.mark.skipif(
    not HAS_DEEPSPEED,
    reason="DeepSpeed (the optional extra; the dev extra and CI install it) is needed to write and read "
    "ZeRO checkpoints: pip install 'bertcls[deepspeed]'",
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used to create"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory, real_words: list[str]) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("convert-task")
    validation = separable_frame(real_words, 48, seed=2, labels=LABELS)
    return SimpleNamespace(
        train=write_frame(separable_frame(real_words, TRAIN_ROWS, seed=1, labels=LABELS), folder / "train.csv"),
        validation=write_frame(validation, folder / "dev.csv"),
        predict=write_frame(validation[["text"]], folder / "predict.csv"),
        texts=validation["text"].tolist()[:16],
    )


class SaveRecords(L.Callback):
    """At the end of fit, save what ``ProbeLogits`` and ``RecordLearningRates`` recorded to $BERTCLS_TEST_RECORDS."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        records = {"probes": ProbeLogits.records, "learning_rates": RecordLearningRates.records}
        torch.save(records, os.environ["BERTCLS_TEST_RECORDS"])


def fit(
    folder: Path, model_dir: Path, task: SimpleNamespace, experiment: str, *extra: object, process: bool = False
) -> SimpleNamespace:
    """A 2-epoch fit with gradient accumulation (in-process, or in its own); the probe logits and learning rates."""
    ProbeLogits.records.clear()
    RecordLearningRates.records.clear()
    args = fit_args(
        model_dir,
        task,
        experiment,
        2,
        "--trainer.callbacks+=helpers.ProbeLogits",
        "--trainer.callbacks+=test_optimization.RecordLearningRates",
        "--trainer.accumulate_grad_batches",
        ACCUMULATE,
        "--model.warmup_ratio",
        "0",
        *extra,
    )
    if process:
        records = folder / f"records-{len(list(folder.glob('records-*')))}.pt"
        env = {"BERTCLS_CACHE": str(folder / "cache"), "BERTCLS_TEST_RECORDS": str(records)}
        done = run_bertcls_process(*args, "--trainer.callbacks+=test_convert.SaveRecords", cwd=folder, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        recorded = torch.load(records, weights_only=True)
    else:
        assert run_in(folder, *args) is None
        recorded = {"probes": dict(ProbeLogits.records), "learning_rates": list(RecordLearningRates.records)}
    return SimpleNamespace(
        folder=folder,
        last=folder / "checkpoints" / experiment / "version_0" / "checkpoints" / "last.ckpt",
        probes=recorded["probes"],
        learning_rates=[tuple(record) for record in recorded["learning_rates"]],
    )


def run_convert(*args: object) -> SystemExit | None:
    try:
        convert.main([str(arg) for arg in args])
    except SystemExit as exit_:
        return exit_
    return None


def logits_at(model: BertClassifier, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(batch)


def assert_hf_folder_matches(folder: Path, checkpoint: Path, texts: list[str]) -> None:
    """``AutoModel`` / ``AutoTokenizer`` load the folder and reproduce the checkpoint's encoder and tokenizer."""
    model = BertClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoder = AutoModel.from_pretrained(folder).eval()
    bundled = torch.load(checkpoint, map_location="cpu", weights_only=True)[TOKENIZER_CHECKPOINT_KEY]
    assert {name: (folder / name).read_text(encoding="utf-8") for name in bundled} == bundled
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    assert inputs["attention_mask"].min() == 0, "the texts should need padding"
    with torch.no_grad():
        expected = model.encoder(**inputs).last_hidden_state
        actual = encoder(**inputs).last_hidden_state
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    labels = model.hparams.label_names
    assert encoder.config.id2label == dict(enumerate(labels))
    assert encoder.config.label2id == {name: index for index, name in enumerate(labels)}
    with safe_open(folder / convert.HEAD_FILE, "pt") as head:
        assert json.loads(head.metadata()["label_names"]) == labels
        assert head.metadata()["task"] == "single_label" and head.metadata()["pooling"] == model.hparams.pooling
        head_state = {name: head.get_tensor(name) for name in head.keys()}  # noqa: SIM118 (safe_open is no dict)
    assert head_state.keys() == model.head.state_dict().keys()
    for name, tensor in model.head.state_dict().items():
        assert torch.equal(head_state[name], tensor), name
    assert "bertcls export" in (folder / "README.md").read_text()


def assert_round_trip(converted: Path, probes: dict, source: Path | None = None) -> None:
    """The converted checkpoint loads with ``load_from_checkpoint`` and gives the logits the run had at its step."""
    checkpoint = torch.load(converted, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in checkpoint and "ds_config" not in checkpoint
    assert all(
        tensor.dtype == torch.float32 for tensor in checkpoint["state_dict"].values() if tensor.is_floating_point()
    )
    batch, logits = probes[checkpoint["global_step"]]
    model = BertClassifier.load_from_checkpoint(converted, map_location="cpu")
    torch.testing.assert_close(logits_at(model, batch), logits, rtol=0, atol=1e-6)
    if source is not None:  # a plain source: the very same tensors and metadata
        original = torch.load(source, map_location="cpu", weights_only=True)
        assert checkpoint["hyper_parameters"] == original["hyper_parameters"]
        assert checkpoint[TOKENIZER_CHECKPOINT_KEY] == original[TOKENIZER_CHECKPOINT_KEY]
        for name, tensor in original["state_dict"].items():
            assert torch.equal(checkpoint["state_dict"][name], tensor), name


# --- from a plain checkpoint ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, task: SimpleNamespace) -> SimpleNamespace:
    return fit(tmp_path_factory.mktemp("convert-plain"), tiny_model_dir, task, "plain", "--model.learning_rate", "3e-3")


def test_plain_checkpoint_to_hf_folder_keeps_encoder_outputs(plain: SimpleNamespace, task, tmp_path: Path) -> None:
    assert run_convert(plain.last, "--hf-folder", tmp_path / "hf") is None
    assert_hf_folder_matches(tmp_path / "hf", plain.last, task.texts)


def test_plain_checkpoint_round_trip_gives_identical_logits(plain: SimpleNamespace, tmp_path: Path) -> None:
    assert run_convert(plain.last, "--to", tmp_path / "model.ckpt") is None
    assert_round_trip(tmp_path / "model.ckpt", plain.probes, source=plain.last)


def test_converted_checkpoint_predicts_like_the_original(plain: SimpleNamespace, task, tmp_path: Path) -> None:
    converted = tmp_path / "model.ckpt"
    assert run_convert(plain.last, "--to", converted) is None
    outputs = []
    for checkpoint in (plain.last, converted):
        output = tmp_path / f"{checkpoint.stem}.jsonl"
        args = ["--data.predict_file", task.predict, "--predictions.output_file", output, "--trainer.logger", "false"]
        assert run_in(tmp_path, "predict", "--ckpt_path", checkpoint, *args) is None
        outputs.append(read_predictions(output))
    assert outputs[0] == outputs[1] and len(outputs[0]) == 48


# --- errors --------------------------------------------------------------------------------------------
def error_of(*args: object) -> str:
    exit_ = run_convert(*args)
    assert exit_ is not None and isinstance(exit_.code, str), exit_
    assert exit_.code.startswith("bertcls: error: ")
    return exit_.code


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    message = error_of(tmp_path / "nope.ckpt", "--to", tmp_path / "out.ckpt")
    assert f"{tmp_path / 'nope.ckpt'} does not exist" in message and "last.ckpt" in message


def test_folder_that_is_not_a_deepspeed_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    message = error_of(folder, "--hf-folder", tmp_path / "hf")
    assert f"{folder} is a folder but not a DeepSpeed checkpoint" in message and "Give a .ckpt file" in message
    assert not (tmp_path / "hf").exists()


def test_deepspeed_folder_without_deepspeed_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "last.ckpt"  # the layout only: the error comes before anything is read
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "latest").write_text("checkpoint")
    (folder / "checkpoint" / "mp_rank_00_model_states.pt").write_bytes(b"")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real_find_spec(name, *a)
    )
    message = error_of(folder, "--to", tmp_path / "out.ckpt")
    assert str(folder) in message and "pip install 'bertcls[deepspeed]'" in message


def test_existing_output_needs_overwrite(plain: SimpleNamespace, tmp_path: Path) -> None:
    output = tmp_path / "out.ckpt"
    output.write_text("mine")
    assert "--overwrite" in error_of(plain.last, "--to", output)
    assert output.read_text() == "mine"
    assert run_convert(plain.last, "--to", output, "--overwrite") is None
    assert torch.load(output, map_location="cpu", weights_only=True)["state_dict"]


def test_an_output_is_required(plain: SimpleNamespace) -> None:
    exit_ = run_convert(plain.last)
    assert exit_ is not None and exit_.code == 2  # argparse's usage error


# --- from a DeepSpeed ZeRO checkpoint ----------------------------------------------------------------
@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def zero(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, task
) -> SimpleNamespace:
    if not HAS_DEEPSPEED:
        pytest.skip(NEEDS_DEEPSPEED.kwargs["reason"])
    folder = tmp_path_factory.mktemp(f"convert-zero{request.param}")
    strategy = folder / "strategy.yaml"
    strategy.write_text(
        "class_path: bertcls.strategies.CPUDeepSpeedStrategy\n"
        f"init_args:\n  stage: {request.param}\n  logging_batch_size_per_gpu: {BATCH_SIZE}\n"
    )
    extra = ("--model.learning_rate", "3e-3", "--trainer.strategy", strategy)
    run = fit(folder, tiny_model_dir, task, "zero", *extra, process=True)
    assert (run.last / "checkpoint").is_dir(), "DeepSpeed writes a folder"
    # Folders go into two slots in turn, and last.ckpt links to the newest complete one.
    assert run.last.is_symlink() and os.readlink(run.last) in ("last-a.ckpt", "last-b.ckpt")
    assert {path.name for path in run.last.parent.glob("last-*.ckpt")} == {"last-a.ckpt", "last-b.ckpt"}
    run.stage = request.param
    return run


@NEEDS_DEEPSPEED
@pytest.mark.strategies
def test_zero_checkpoint_to_plain_checkpoint(zero: SimpleNamespace, task, tmp_path: Path) -> None:
    converted = tmp_path / "model.ckpt"
    assert run_convert(zero.last, "--to", converted) is None
    assert_round_trip(converted, zero.probes)
    if zero.stage == 2:  # ZeRO-2 also keeps the full weights in its model-states file: the same tensors
        states = torch.load(zero.last / "checkpoint" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
        state_dict = torch.load(converted, map_location="cpu", weights_only=True)["state_dict"]
        assert states.keys() == state_dict.keys()
        for name, tensor in states.items():
            assert torch.equal(state_dict[name], tensor), name
    # ... and the CLI predicts from it without DeepSpeed, with the tokenizer it carries.
    output = tmp_path / "predictions.jsonl"
    args = ["--data.predict_file", task.predict, "--predictions.output_file", output, "--trainer.logger", "false"]
    assert run_in(tmp_path, "predict", "--ckpt_path", converted, *args) is None
    assert len(read_predictions(output)) == 48


@NEEDS_DEEPSPEED
@pytest.mark.strategies
def test_zero_checkpoint_to_hf_folder(zero: SimpleNamespace, task, tmp_path: Path) -> None:
    converted = tmp_path / "model.ckpt"
    assert run_convert(zero.last, "--to", converted, "--hf-folder", tmp_path / "hf") is None
    assert_hf_folder_matches(tmp_path / "hf", converted, task.texts)
    # Given the tag folder inside (last.ckpt/checkpoint) instead, the same checkpoint comes out.
    assert run_convert(zero.last / "checkpoint", "--to", tmp_path / "inner.ckpt") is None
    inner = torch.load(tmp_path / "inner.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for name, tensor in torch.load(converted, map_location="cpu", weights_only=True)["state_dict"].items():
        assert torch.equal(inner[name], tensor), name


@NEEDS_DEEPSPEED
@pytest.mark.strategies
def test_zero_checkpoint_exports(zero: SimpleNamespace, tmp_path: Path) -> None:
    """``bertcls export`` gathers the ZeRO shards too: to ONNX and to a Hugging Face folder (this run's [CLS]
    pooling), with logits equal to the checkpoint's."""
    pytest.importorskip("onnxruntime")
    from bertcls.commands.export import export

    result = export([str(zero.last), "--output", str(tmp_path / "onnx"), "--onnx-only"])
    assert result["onnx_difference"] < 1e-4
    assert (tmp_path / "onnx" / "model.onnx").is_file() and (tmp_path / "onnx" / "tokenizer.json").is_file()
    assert export([str(zero.last), "--output", str(tmp_path / "hf")])["hf_difference"] < 1e-4
    assert (tmp_path / "hf" / "config.json").is_file()


@NEEDS_DEEPSPEED
@pytest.mark.strategies
def test_zero_run_trains_and_its_schedule_ends_at_its_last_step(zero: SimpleNamespace) -> None:
    # A step closes each epoch's partial accumulation, as under the other strategies.
    assert_schedule_ends_at_the_last_step(zero.learning_rates, expected_steps=2 * math.ceil(7 / ACCUMULATE))
    batch, logits = zero.probes[max(zero.probes)]
    # Eight steps only: the validation loss is below chance's (ln 3), no more is to be expected.
    assert torch.nn.functional.cross_entropy(logits, batch["labels"]) < math.log(len(LABELS))


@NEEDS_DEEPSPEED
@pytest.mark.strategies
@pytest.mark.parametrize("zero", [2], ids=["zero2"], indirect=True)  # one stage is enough
def test_zero_run_resumes_from_its_checkpoint_folder(zero: SimpleNamespace, tiny_model_dir: Path, task) -> None:
    """``fit --ckpt_path last`` finds the newest ``last.ckpt`` folder and continues the run from it."""
    strategy = zero.folder / "strategy.yaml"
    extra = ("--model.learning_rate", "3e-3", "--trainer.strategy", strategy, "--trainer.max_epochs", "3")
    resumed = fit(zero.folder, tiny_model_dir, task, "zero", *extra, "--ckpt_path", "last", process=True)
    steps = [step for step, _ in resumed.learning_rates]
    assert steps[0] == 2 * math.ceil(7 / ACCUMULATE), "the run continued from the checkpoint's step"
    assert max(resumed.probes) == 3 * math.ceil(7 / ACCUMULATE)
    assert not (zero.folder / "checkpoints" / "zero" / "version_1").exists()


def test_encoder_of_the_hf_folder_has_the_runs_architecture(plain: SimpleNamespace, tmp_path: Path) -> None:
    """No pooler unless the head used one: the saved encoder is the trained one, parameter for parameter."""
    assert run_convert(plain.last, "--hf-folder", tmp_path / "hf") is None
    hparams = torch.load(plain.last, map_location="cpu", weights_only=True)["hyper_parameters"]
    trained = load_encoder(hparams["model_name"], hparams["encoder_config"], keep_pooler=False)
    saved = AutoModel.from_pretrained(tmp_path / "hf")
    assert set(trained.state_dict()) == set(saved.state_dict()) - {
        name for name in saved.state_dict() if name.startswith("pooler.")
    }


def test_pooler_is_saved_when_the_head_used_it(tiny_model_dir: Path, task, tmp_path: Path) -> None:
    run = fit(tmp_path, tiny_model_dir, task, "pooler", "--model.pooling", "pooler", "--trainer.limit_train_batches", 2)
    assert run_convert(run.last, "--hf-folder", tmp_path / "hf") is None
    model = BertClassifier.load_from_checkpoint(run.last, map_location="cpu")
    saved = AutoModel.from_pretrained(tmp_path / "hf")
    for name, tensor in model.encoder.pooler.state_dict().items():
        assert torch.equal(saved.pooler.state_dict()[name], tensor), name
    assert "The head used BERT's pooler" in (tmp_path / "hf" / "README.md").read_text()
