"""``bertcls download``: check and fetch a run's model, tokenizer and data, pre-build its cache, write a manifest.

Runs in-process and offline (conftest sets ``HF_HUB_OFFLINE=1``): the packaged real MiniLM and small CSV files
for the local path; a Hugging Face hub cache laid out by hand for the hub path; hub names that are not cached
for the errors a compute node without internet would give.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import CONFIGS, MINILM, run_cli, separable_frame, write_frame
from huggingface_hub.utils import filter_repo_objects

from bertcls.commands.download import MANIFEST_NAME, MODEL_FILES, SUBFOLDERS
from bertcls.data.datamodule import ClassificationDataModule
from bertcls.errors import DataError
from bertcls.paths import resolve_location

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def files(tmp_path: Path, real_words: list[str]) -> dict[str, Path]:
    return {
        "train": write_frame(separable_frame(real_words, 64, seed=1), tmp_path / "data" / "train.csv"),
        "validation": write_frame(separable_frame(real_words, 16, seed=2), tmp_path / "data" / "dev.csv"),
    }


def run_args(model: object, files: dict[str, Path], *extra: object) -> list[object]:
    """The quickstart config with its model and data replaced; the same for `download` and `fit`."""
    return [
        "--config",
        CONFIGS / "quickstart.yaml",
        "--model.model_name",
        model,
        "--data.train_file",
        files["train"],
        "--data.validation_file",
        files["validation"],
        "--data.where",
        "null",
        "--data.max_length",
        "32",
        *extra,
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_entries(cache: Path) -> set[str]:
    """The cache's entries (not its lock files or staging folders, whose names start with a dot)."""
    return {entry.name for entry in cache.iterdir() if not entry.name.startswith(".")} if cache.is_dir() else set()


def error_message(exit_: SystemExit | None) -> str:
    assert isinstance(exit_, SystemExit), "expected the command to stop with an error"
    assert isinstance(exit_.code, str), exit_.code
    assert exit_.code.startswith("bertcls: "), exit_.code
    return exit_.code


def test_download_prepares_an_offline_fit(
    run_dir: Path,
    files: dict[str, Path],
    bertcls_cache: Path,
    lightning_messages: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli("download", *run_args(MINILM, files)) is None

    manifest = json.loads((run_dir / "checkpoints" / MANIFEST_NAME).read_text())  # the logger's save_dir
    by_option = {item["option"]: item for item in manifest["artefacts"]}
    model = by_option["model.model_name"]
    assert model["kind"] == "model" and model["name"] == MINILM and model["source"] == "package"
    assert model["path"] == resolve_location(MINILM) and Path(model["path"], "model.safetensors").is_file()
    assert "model.safetensors" in model["files"] and model["size_bytes"] > 80_000_000
    assert by_option["data.tokenizer"]["kind"] == "tokenizer"
    assert by_option["data.tokenizer"]["path"] == model["path"]
    for split, option in (("train", "data.train_file"), ("validation", "data.validation_file")):
        item = by_option[option]
        assert item["kind"] == "file" and Path(item["path"]) == files[split].resolve()
        assert item["sha256"] == sha256(files[split])
        assert item["size_bytes"] == files[split].stat().st_size
    assert {"bertcls", "torch", "transformers", "datasets", "huggingface_hub"} <= set(manifest["versions"])
    assert all(manifest["versions"][name] != "not installed" for name in ("torch", "transformers", "datasets"))
    assert manifest["created"] and manifest["experiment"] == "quickstart"
    environment = manifest["environment"]
    assert environment["HF_HUB_OFFLINE"] == environment["HF_DATASETS_OFFLINE"] == "1"
    assert environment["TRANSFORMERS_OFFLINE"] == "1"
    assert environment["BERTCLS_CACHE"] == str(bertcls_cache)
    output = capsys.readouterr().out
    assert "export HF_HUB_OFFLINE=1" in output and f"export BERTCLS_CACHE={bertcls_cache}" in output

    built = cache_entries(bertcls_cache)
    assert manifest["tokenization_cache"]["path"] == str(bertcls_cache.resolve())
    assert set(manifest["tokenization_cache"]["built"]) == built and len(built) == 2  # train and validation

    # The compute job: offline (conftest), the same config: it finds every split already tokenized.
    lightning_messages.clear()
    fit = run_args(MINILM, files, "--trainer.max_steps", "2", "--trainer.log_every_n_steps", "1")
    assert run_cli("fit", *fit, "--experiment", "offline") is None
    assert (run_dir / "checkpoints" / "offline").is_dir()
    assert not any(message.startswith("Tokenizing") for message in lightning_messages)
    assert cache_entries(bertcls_cache) == built


def test_missing_data_file_is_a_clear_error(run_dir: Path, files: dict[str, Path], bertcls_cache: Path) -> None:
    missing = files["train"].parent / "missing.csv"
    message = error_message(run_cli("download", *run_args(MINILM, files, "--data.validation_file", missing)))
    assert message.startswith("bertcls: error: data.validation_file")
    assert str(missing) in message and "file not found" in message
    assert not (run_dir / "checkpoints" / MANIFEST_NAME).exists()
    assert not cache_entries(bertcls_cache)


def test_missing_model_folder_is_a_clear_error(run_dir: Path, files: dict[str, Path]) -> None:
    missing = run_dir / "models" / "no-such-model"
    message = error_message(run_cli("download", *run_args(missing, files)))
    assert f"model.model_name '{missing}': no such folder" in message


def test_hub_model_while_offline_says_to_run_where_there_is_internet(
    run_dir: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    empty_cache = tmp_path / "empty-hub-cache"  # never the user's own cache, which may hold the model
    message = error_message(
        run_cli("download", *run_args("bert-base-uncased", files), "--cache-dir", empty_cache, "--no-tokenize")
    )
    assert "model.model_name 'bert-base-uncased'" in message
    assert "on a node with internet access" in message


def test_hub_model_is_taken_from_the_hub_cache(
    run_dir: Path, files: dict[str, Path], tmp_path: Path, tiny_model_dir: Path, bertcls_cache: Path
) -> None:
    """A hub cache laid out as huggingface_hub writes it (refs/main -> snapshots/<commit>), filled with the tiny
    model: ``snapshot_download`` runs for real, offline, and finds the snapshot there (no mock)."""
    hub_cache = tmp_path / "hub"
    repository = hub_cache / "models--acme--tiny-bert"
    shutil.copytree(tiny_model_dir, repository / "snapshots" / COMMIT)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(COMMIT)
    manifest_path = tmp_path / "out" / "manifest.json"

    download = ["download", "--cache-dir", hub_cache, "--manifest", manifest_path]
    assert run_cli(*download, *run_args("acme/tiny-bert", files)) is None
    manifest = json.loads(manifest_path.read_text())
    model, tokenizer = (item for item in manifest["artefacts"] if item["kind"] in ("model", "tokenizer"))
    snapshot = str((repository / "snapshots" / COMMIT).resolve())
    assert model["source"] == tokenizer["source"] == "hub"
    assert model["path"] == tokenizer["path"] == snapshot and model["revision"] == COMMIT
    assert manifest["environment"]["HF_HUB_CACHE"] == str(hub_cache.resolve())
    built = cache_entries(bertcls_cache)
    assert len(built) == 2

    # An explicit revision (here the commit itself) finds the same snapshot.
    assert run_cli(*download, "--revision", COMMIT, *run_args("acme/tiny-bert", files)) is None
    assert json.loads(manifest_path.read_text())["artefacts"][2]["path"] == snapshot
    # The cache key depends on the tokenizer's files, not on where they were loaded from: the same model
    # given as a local folder (or by hub name in `fit`) finds the entries built from the snapshot.
    assert run_cli(*download, *run_args(tiny_model_dir, files)) is None
    assert json.loads(manifest_path.read_text())["tokenization_cache"]["built"] == []
    assert cache_entries(bertcls_cache) == built


def test_model_files_are_safetensors_config_and_tokenizer() -> None:
    """The download patterns, applied to bert-base-uncased's files: no other weight formats, no sub-folders."""
    repository = [
        ".gitattributes",
        "LICENSE",
        "README.md",
        "config.json",
        "coreml/fill-mask/float32_model.mlpackage/Manifest.json",
        "flax_model.msgpack",
        "model.onnx",
        "model.safetensors",
        "pytorch_model.bin",
        "rust_model.ot",
        "tf_model.h5",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    kept = set(filter_repo_objects(repository, allow_patterns=MODEL_FILES, ignore_patterns=SUBFOLDERS))
    assert kept == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"}


def test_dataset_folder_is_loaded_and_recorded(
    run_dir: Path, files: dict[str, Path], tmp_path: Path, tiny_model_dir: Path, bertcls_cache: Path
) -> None:
    folder = tmp_path / "dataset"
    folder.mkdir()
    for split, name in (("train", "train.csv"), ("validation", "validation.csv")):
        shutil.copy(files[split], folder / name)
    args = [*run_args(tiny_model_dir, files), "--data.train_file", "null", "--data.validation_file", "null"]
    assert run_cli("download", *args, "--data.hub_dataset", folder) is None

    manifest = json.loads((run_dir / "checkpoints" / MANIFEST_NAME).read_text())
    datasets = {item["split"]: item for item in manifest["artefacts"] if item["kind"] == "dataset"}
    assert set(datasets) == {"train", "validation"}
    assert datasets["train"]["name"] == str(folder) and datasets["train"]["source"] == "local"
    assert datasets["train"]["num_rows"] == 64 and datasets["validation"]["num_rows"] == 16
    assert Path(datasets["train"]["path"]).is_dir() and datasets["train"]["revision"] is None
    assert len(cache_entries(bertcls_cache)) == 2


def test_hub_dataset_while_offline_is_a_clear_error(
    run_dir: Path, files: dict[str, Path], tiny_model_dir: Path
) -> None:
    args = [*run_args(tiny_model_dir, files), "--data.train_file", "null", "--data.validation_file", "null"]
    message = error_message(run_cli("download", *args, "--data.hub_dataset", "acme/no-such-dataset"))
    assert "data.hub_dataset" in message and "acme/no-such-dataset" in message
    assert "on a node with internet access" in message


def test_a_dataset_without_validation_split_is_held_out_of_train(
    run_dir: Path, files: dict[str, Path], tmp_path: Path, tiny_model_dir: Path
) -> None:
    folder = tmp_path / "dataset"
    folder.mkdir()
    shutil.copy(files["train"], folder / "train.csv")  # no validation or test split
    args = [*run_args(tiny_model_dir, files), "--data.train_file", "null", "--data.validation_file", "null"]
    assert run_cli("fit", *args, "--data.hub_dataset", folder, "--trainer.max_epochs", "1") is None
    metrics = pd.read_csv(next(run_dir.glob("checkpoints/*/version_0/metrics.csv")))
    assert metrics["val/accuracy"].notna().any(), "validation held out of the training split"
    datamodule = ClassificationDataModule(hub_dataset=str(folder), tokenizer=str(tiny_model_dir))
    assert sorted(datamodule.sources) == ["train"]
    with pytest.raises(DataError, match=r"has no such split \(bertcls reads its \['train'\]\)\. Map it with"):
        datamodule.build_cache("test")
