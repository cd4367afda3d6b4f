"""User mistakes end in one ``bertcls: error: <message>`` line (no traceback) that names the option and the fix.

Each case runs the real CLI in-process on the tiny BERT (the error comes before or at the first batch), except
the one that needs two processes, which runs ``python -m bertcls`` with 2-rank CPU DDP.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import CONFIGS, run_bertcls_process, run_cli, separable_frame, write_frame
from jsonargparse import Namespace

from bertcls.cli import batching_advice
from bertcls.data.sampler import BatchingError, LengthBucketBatchSampler
from bertcls.errors import InputError
from bertcls.option_parser import suggestions


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, real_words: list[str]) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("input-errors")
    validation = separable_frame(real_words, 16, seed=2)
    return SimpleNamespace(
        train=write_frame(separable_frame(real_words, 32, seed=1), folder / "train.csv"),
        validation=write_frame(validation, folder / "dev.csv"),
        one_row=write_frame(validation.head(1), folder / "one-row.csv"),
        predict=write_frame(validation[["text"]], folder / "predict.csv"),
    )


def fit(model_dir: Path, data: SimpleNamespace, *extra: object) -> list[object]:
    return [
        "fit", "--model.model_name", model_dir, "--data.train_file", data.train, "--data.validation_file",
        data.validation, "--data.max_length", 16, "--data.batch_size", 8, "--trainer.max_epochs", 1,
        "--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
        "--trainer.enable_model_summary", "false", *extra,
    ]  # fmt: skip


def error_line(exit_: SystemExit | None) -> str:
    assert exit_ is not None, "the command should have stopped with a message"
    message = str(exit_.code)
    assert message.startswith("bertcls: error: "), message
    assert "Traceback" not in message
    return message


# --- batch size and number of processes (the sampler, where the loaders are built) ----------------------------
@pytest.mark.parametrize(
    ("option", "value", "split"),
    [("--data.batch_size", 0, "train"), ("--data.eval_batch_size", -1, "validation")],
)
def test_bad_batch_sizes_name_the_split_and_the_option(
    tiny_model_dir: Path, data: SimpleNamespace, run_dir: Path, option: str, value: int, split: str
) -> None:
    message = error_line(run_cli(*fit(tiny_model_dir, data, option, value, "--trainer.enable_progress_bar", "false")))
    assert message == (
        f"bertcls: error: the {split} split with {option[2:]} {value} and 1 process (trainer.devices x "
        f"trainer.num_nodes): the batch size must be at least 1, got {value}."
    )


def test_an_unset_eval_batch_size_is_named_with_its_default() -> None:
    with pytest.raises(BatchingError) as caught:
        LengthBucketBatchSampler(lengths=[1, 2, 3, 4, 5], max_batch_size=1, shuffle=False, num_replicas=3)
    assert isinstance(caught.value, InputError)
    config = Namespace(data=Namespace(batch_size=1, eval_batch_size=None))
    assert batching_advice(config, "test", caught.value) == (
        "the test split with data.eval_batch_size 1 (unset: 2 x data.batch_size) and 3 processes (trainer.devices x "
        "trainer.num_nodes): 5 examples in batches of 1 cannot give 3 processes the same number of non-empty "
        "batches; use a batch size of at least 2."
    )


def test_a_split_smaller_than_the_number_of_processes_ends_every_rank_with_the_message(
    tiny_model_dir: Path, data: SimpleNamespace, tmp_path: Path
) -> None:
    ddp = [
        "--trainer.devices", 2, "--trainer.strategy", "lightning.pytorch.strategies.DDPStrategy",
        "--trainer.strategy.timeout", "0:02:00", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    args = fit(tiny_model_dir, data, "--data.validation_file", data.one_row, *ddp)
    result = run_bertcls_process(*args, cwd=tmp_path, env={"BERTCLS_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 1, result.stderr[-3000:]
    expected = (
        "bertcls: error: the validation split with data.eval_batch_size 16 (unset: 2 x data.batch_size) and 2 "
        "processes (trainer.devices x trainer.num_nodes): 1 example cannot be shared across 2 processes (each needs "
        "at least one); use fewer devices or more data."
    )
    assert result.stderr.count(expected) == 2, result.stderr[-3000:]  # one per rank
    assert "Traceback" not in result.stderr


# --- callbacks -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("callback", "option", "value", "expected"),
    [
        ("LastCheckpoint", "every_n_train_steps", -1, "must be 0 (off) or more, got -1"),
        ("ProgressBar", "every_n_steps", 0, "must be at least 1 (a line every that many batches), got 0"),
    ],
)
def test_bad_callback_intervals_name_the_callback_and_the_option(
    tiny_model_dir: Path, data: SimpleNamespace, run_dir: Path, callback: str, option: str, value: int, expected: str
) -> None:
    config = run_dir / "callbacks.yaml"
    config.write_text(
        f"trainer:\n  callbacks:\n  - class_path: bertcls.callbacks.{callback}\n    init_args:\n"
        f"      {option}: {value}\n"
    )
    # Checkpointing on: with it off (fit's default here), checkpoint callbacks are left out unread.
    message = error_line(
        run_cli(*fit(tiny_model_dir, data, "--config", config, "--trainer.enable_checkpointing", "true"))
    )
    assert message.startswith(f"bertcls: error: trainer.callbacks {callback}.{option} {expected}"), message
    assert "configs/callbacks/default.yaml" in message


# --- model options ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoder_without_pooler(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A tiny random ELECTRA (no pooler layer) with the tiny BERT's tokenizer."""
    from transformers import AutoConfig, ElectraConfig, ElectraModel

    folder = tmp_path_factory.mktemp("tiny-electra")
    shutil.copytree(
        tiny_model_dir, folder, ignore=shutil.ignore_patterns("config.json", "*.safetensors"), dirs_exist_ok=True
    )
    config = ElectraConfig(
        vocab_size=AutoConfig.from_pretrained(tiny_model_dir).vocab_size, embedding_size=32, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
    )  # fmt: skip
    ElectraModel(config).save_pretrained(folder)
    return folder


def test_pooler_pooling_is_refused_when_the_model_is_built(
    encoder_without_pooler: Path, data: SimpleNamespace, run_dir: Path
) -> None:
    message = error_line(run_cli(*fit(encoder_without_pooler, data, "--model.pooling", "pooler")))
    assert message.startswith("bertcls: error: model.pooling: pooler needs an encoder with a pooler layer"), message
    assert "ElectraModel" in message and "--model.pooling cls" in message


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--model.threshold", 1.5, "model.threshold must be between 0 and 1 (exclusive) for task multi_label, got 1.5"),
        ("--model.label_smoothing", 0.1, "model.label_smoothing applies to the cross-entropy tasks"),
    ],
)
def test_multi_label_head_options_carry_their_full_names(
    tiny_model_dir: Path, data: SimpleNamespace, run_dir: Path, option: str, value: float, expected: str
) -> None:
    multi_label = ("--data.task", "multi_label", "--model.label_names", "[pos, neg]", option, value)
    message = error_line(run_cli(*fit(tiny_model_dir, data, *multi_label)))
    assert message.startswith(f"bertcls: error: {expected}"), message


# --- checkpoints -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["predict", "test", "validate"])
def test_evaluating_without_a_checkpoint_asks_for_one(
    command: str, tiny_model_dir: Path, data: SimpleNamespace, run_dir: Path
) -> None:
    files = ("--data.predict_file", data.predict, "--data.test_file", data.validation, "--data.train_file", data.train)
    message = error_line(run_cli(command, "--model.model_name", tiny_model_dir, *files, "--trainer.logger", "false"))
    assert message.startswith(f"bertcls: error: bertcls {command} needs a trained model, and no --ckpt_path was given")
    assert "--ckpt_path checkpoints/<experiment>/version_0/checkpoints/last.ckpt" in message
    assert not (run_dir / "checkpoints").exists()


def test_last_resumes_fit_only(data: SimpleNamespace, run_dir: Path) -> None:
    message = error_line(run_cli("predict", "--ckpt_path", "last", "--data.predict_file", data.predict))
    assert message.startswith("bertcls: error: --ckpt_path last finds the latest run only for bertcls fit"), message
    assert "bertcls predict needs the checkpoint's path, e.g. --ckpt_path checkpoints/" in message


@pytest.mark.parametrize("command", ["fit", "predict"])
def test_a_checkpoint_that_is_not_there_is_named(
    command: str, tiny_model_dir: Path, data: SimpleNamespace, run_dir: Path
) -> None:
    missing = run_dir / "no-such.ckpt"
    args = fit(tiny_model_dir, data) if command == "fit" else [command, "--data.predict_file", data.predict]
    message = error_line(run_cli(*args, "--ckpt_path", missing))
    assert message.startswith(f"bertcls: error: --ckpt_path {missing}: no such file or folder. Give the path"), message


# --- set-up: data options, files and folders, option names -----------------------------------------------------
MALFORMED = Path(__file__).parent / "malformed"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--data.max_length", 1024), "data.max_length 1024 is longer than model.model_name '{model}' can read: its "
         "encoder has 512 positions (max_position_embeddings in its config). Set --data.max_length 512 or less."),
        (("--data.max_length", 0), "data.max_length 0 leaves no room for text: an input is [CLS] text [SEP]"),
        (("--data.validation_file", "null", "--data.validation_fraction", 1.5), "data.validation_fraction 1.5: the "
         "share of the training rows held out for validation (when no data.validation_file is given) must be between"),
        (("--data.validation_file", "null", "--data.validation_fraction", 0), "data.validation_fraction 0.0: the "),
        (("--data.train_file", MALFORMED / "one_class.csv"), f"{MALFORMED / 'one_class.csv'}: only one label, 'pos', "
         "occurs in the training data (column 'label'): a classifier needs examples of at least two labels"),
        (("--data.train_file", MALFORMED), f"{MALFORMED}: is a folder, not a file. Give the data file inside it"),
    ],
    ids=["max_length over the positions", "max_length 0", "validation_fraction 1.5", "validation_fraction 0",
         "one class", "a folder as the file"],
)  # fmt: skip
def test_bad_set_up_stops_before_the_model_loads(
    tiny_model_dir: Path, data: SimpleNamespace, run_dir: Path, extra: tuple, expected: str
) -> None:
    exit_ = run_cli(*fit(tiny_model_dir, data, *extra))
    message = str(exit_.code) if exit_ is not None else "the command should have stopped with a message"
    assert message.startswith(("bertcls: error: ", "bertcls: data error: ")) and "Traceback" not in message, message
    assert expected.format(model=tiny_model_dir) in message, message


def test_a_missing_model_folder_is_named_as_a_folder_not_a_hub_id(data: SimpleNamespace, run_dir: Path) -> None:
    missing = run_dir / "models" / "my-bert"
    message = error_line(run_cli(*fit(missing, data)))
    assert message.startswith(f"bertcls: error: model.model_name '{missing}': no such folder"), message
    assert "not a Hugging Face hub name" in message and "Repo id" not in message


def test_a_where_filter_from_another_config_names_data_where(
    tiny_model_dir: Path, data: SimpleNamespace, run_dir: Path
) -> None:
    """The quickstart's `where: {source: rotten_tomatoes}` applied to the user's own file (README's pattern)."""
    args = ["fit", "--config", CONFIGS / "quickstart.yaml", *fit(tiny_model_dir, data)[1:]]
    exit_ = run_cli(*args)
    assert exit_ is not None and str(exit_.code).startswith(f"bertcls: data error: {data.train}: data.where ")
    assert "filters on column(s) 'source', which it does not have (available columns: text, label)" in str(exit_.code)
    assert "--data.where null" in str(exit_.code)
    assert run_cli(*args, "--data.where", "null", "--trainer.max_steps", 1) is None  # and that clears it


def test_checkpointing_off_drops_the_checkpoint_callbacks_with_a_note(
    tiny_model_dir: Path, data: SimpleNamespace, run_dir: Path, lightning_messages: list[str]
) -> None:
    callbacks = ("--trainer.callbacks", CONFIGS / "callbacks" / "default.yaml", "--trainer.max_steps", 1)
    assert run_cli(*fit(tiny_model_dir, data, *callbacks)) is None  # enable_checkpointing false: see fit()
    assert (
        "trainer.enable_checkpointing false: no checkpoint is written (left out of trainer.callbacks: BestCheckpoint, "
        "LastCheckpoint), so this run cannot be resumed (--ckpt_path last)"
    ) in "\n".join(lightning_messages)
    assert not list(run_dir.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("command", "usage"), [("fit", "usage: bertcls [options] fit "), ("validate-data", "usage: bertcls validate-data ")]
)
def test_abbreviated_options_are_refused_with_the_full_name(
    tiny_model_dir: Path, data: SimpleNamespace, run_dir: Path, capsys: pytest.CaptureFixture, command: str, usage: str
) -> None:
    exit_ = run_cli(command, *fit(tiny_model_dir, data)[1:], "--data.text_colum", "text")
    assert exit_ is not None and exit_.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(usage), stderr[:300]
    assert f"tip: For details of accepted options run: bertcls {command} --help" in stderr
    assert "--data.text_colum: did you mean --data.text_column? Options are never abbreviated" in stderr


def test_unknown_options_get_the_closest_names() -> None:
    options = ["--data.text_column", "--data.text_pair_column", "--trainer.max_epochs", "--trainer.max_steps", "--data"]
    assert suggestions(["--data.text", "--trainer.max_epoch=2", "--data.zzz", "value"], options) == (
        ". --data.text: did you mean --data.text_column or --data.text_pair_column? --trainer.max_epoch: did you mean "
        "--trainer.max_epochs? Options are never abbreviated: give their full names."
    )
    assert suggestions(["--nothing.close"], options) == ""
