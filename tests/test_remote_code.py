"""A model or tokenizer folder that asks to run its own Python code (``auto_map``) is refused, and its code never
runs: transformers' ``trust_remote_code`` stays off, without the question it asks on a terminal. With the user's
opt-in (``--model.trust_remote_code true``) the code runs; a checkpoint can never turn the option on by itself."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import CONFIGS, run_cli, separable_frame, write_frame
from test_cli_end_to_end import fit_args, run_in

from bertcls.commands.export import export
from bertcls.data.datamodule import ClassificationDataModule
from bertcls.errors import InputError
from bertcls.model.encoder import load_encoder
from bertcls.model.module import BertClassifier

pytestmark = [
    pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used to create"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

# transformers runs a copy of the file from its modules cache: the marker's path is written into the code.
PAYLOAD = """
import pathlib
pathlib.Path(MARKER).write_text("the folder's code ran")
from transformers import BertConfig, BertModel, BertTokenizerFast
class CustomConfig(BertConfig):
    model_type = "custom-bert"
class CustomModel(BertModel):
    config_class = CustomConfig
class CustomTokenizer(BertTokenizerFast):
    pass
"""
REFUSED = r"asks to run its own Python code"
OPT_IN = ("--model.trust_remote_code", "true")


def write_custom_code_folder(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny BERT as an unknown architecture and tokenizer class, whose configs point at a Python file in the
    folder (transformers cannot load it without running that file, which creates ``folder/EXECUTED``)."""
    shutil.copytree(tiny_model_dir, folder)
    (folder / "custom_code.py").write_text(PAYLOAD.replace("MARKER", repr(str(folder / "EXECUTED"))))
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom_code.CustomConfig", "AutoModel": "custom_code.CustomModel"}
    config["model_type"] = "custom-bert"
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, "custom_code.CustomTokenizer"]}
    tokenizer_config["tokenizer_class"] = "CustomTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


@pytest.fixture
def custom_code_folder(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return write_custom_code_folder(tiny_model_dir, tmp_path / "custom")


def trusted(folder: Path) -> pytest.WarningsRecorder:
    """Expect the one warning that names the folder whose code runs."""
    return pytest.warns(
        UserWarning, match=rf"trust_remote_code is on: Python code that comes with .* '{re.escape(str(folder))}'"
    )


def test_a_model_with_its_own_code_is_refused_unrun(custom_code_folder: Path) -> None:
    with pytest.raises(InputError, match=r"model.model_name '.*custom' asks to run its own Python code") as error:
        load_encoder(str(custom_code_folder), None, keep_pooler=False)
    assert "trust_remote_code" in str(error.value)
    assert not (custom_code_folder / "EXECUTED").exists()


def test_a_tokenizer_with_its_own_code_is_refused_unrun(custom_code_folder: Path) -> None:
    module = ClassificationDataModule(tokenizer=str(custom_code_folder))
    with pytest.raises(InputError, match=r"data.tokenizer '.*custom' asks to run its own Python code"):
        module.tokenizer  # noqa: B018 (the property loads it)
    assert not (custom_code_folder / "EXECUTED").exists()


def test_a_known_architecture_loads_with_transformers_classes_not_the_folders(custom_code_folder: Path) -> None:
    """With ``model_type: bert`` (and a known tokenizer class) the ``auto_map`` is ignored: transformers' own
    classes load the weights and the folder's code still never runs."""
    changes = {"config.json": ("model_type", "bert"), "tokenizer_config.json": ("tokenizer_class", "BertTokenizer")}
    for name, (key, value) in changes.items():
        settings = json.loads((custom_code_folder / name).read_text())
        settings[key] = value
        (custom_code_folder / name).write_text(json.dumps(settings))
    assert type(load_encoder(str(custom_code_folder), None, keep_pooler=False)).__name__ == "BertModel"
    assert ClassificationDataModule(tokenizer=str(custom_code_folder)).tokenizer.is_fast
    assert not (custom_code_folder / "EXECUTED").exists()


# --- the opt-in ---------------------------------------------------------------------------------
def test_with_the_opt_in_a_models_own_code_runs(custom_code_folder: Path) -> None:
    with trusted(custom_code_folder):
        encoder = load_encoder(str(custom_code_folder), None, keep_pooler=False, trust_remote_code=True)
    assert type(encoder).__name__ == "CustomModel"
    assert (custom_code_folder / "EXECUTED").exists()


def test_with_the_opt_in_a_tokenizers_own_code_runs(custom_code_folder: Path) -> None:
    module = ClassificationDataModule(tokenizer=str(custom_code_folder), trust_remote_code=True)
    with trusted(custom_code_folder):
        assert type(module.tokenizer).__name__ == "CustomTokenizer"
    assert (custom_code_folder / "EXECUTED").exists()
    assert "trust_remote_code" not in module.hparams


def test_a_saved_custom_architecture_is_rebuilt_only_with_the_opt_in(custom_code_folder: Path) -> None:
    """A checkpoint's encoder_config keeps the auto_map: rebuilding it needs the folder's code, so the option."""
    options = {"model_name": str(custom_code_folder), "task": "single_label", "label_names": ["a", "b"]}
    with trusted(custom_code_folder):
        model = BertClassifier(**options, trust_remote_code=True)
    assert "trust_remote_code" not in model.hparams, "only the user turns it on, never a checkpoint"
    saved = model.hparams.encoder_config
    assert saved["auto_map"]["AutoModel"] == "custom_code.CustomModel"
    with pytest.raises(InputError, match=REFUSED + r".*--model.trust_remote_code true"):
        BertClassifier(**options, encoder_config=saved)
    with trusted(custom_code_folder):
        rebuilt = BertClassifier(**options, encoder_config=saved, trust_remote_code=True)
    assert type(rebuilt.encoder).__name__ == "CustomModel"
    rebuilt.load_state_dict(model.state_dict())


# --- checkpoints: the command line decides ------------------------------------------------------
@pytest.fixture(scope="module")
def custom_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, real_words: list[str]
) -> SimpleNamespace:
    """``bertcls fit`` of the custom-code model with the opt-in, and texts to predict."""
    folder = tmp_path_factory.mktemp("custom-run")
    model = write_custom_code_folder(tiny_model_dir, folder / "custom")
    task = SimpleNamespace(
        train=write_frame(separable_frame(real_words, 64, seed=1), folder / "train.csv"),
        validation=write_frame(separable_frame(real_words, 16, seed=2), folder / "dev.csv"),
    )
    assert run_in(folder, *fit_args(model, task, "custom", 1, *OPT_IN)) is None
    predict = write_frame(separable_frame(real_words, 8, seed=3)[["text"]], folder / "predict.csv")
    checkpoint = folder / "checkpoints" / "custom" / "version_0" / "checkpoints" / "last.ckpt"
    return SimpleNamespace(folder=folder, model=model, checkpoint=checkpoint, predict=predict)


def predict(run: SimpleNamespace, checkpoint: Path, output: Path, *extra: object) -> SystemExit | None:
    args = ("predict", "--ckpt_path", checkpoint, "--data.predict_file", run.predict, "--predictions.output_file")
    return run_in(run.folder, *args, output, "--trainer.logger", "false", *extra)


def test_a_checkpoint_of_a_custom_model_needs_the_opt_in_again(custom_run: SimpleNamespace, tmp_path: Path) -> None:
    assert (custom_run.model / "EXECUTED").exists()
    checkpoint = torch.load(custom_run.checkpoint, map_location="cpu", weights_only=True)
    assert "trust_remote_code" not in checkpoint["hyper_parameters"]
    assert "trust_remote_code" not in checkpoint["datamodule_hyper_parameters"]
    refused = predict(custom_run, custom_run.checkpoint, tmp_path / "refused.jsonl")
    assert isinstance(refused, SystemExit)
    # The data, and so the checkpoint's bundled tokenizer, is prepared before the model: it is refused first.
    refusal = r"(model\.model_name|data\.tokenizer) '[^']*' " + REFUSED + r".*--model.trust_remote_code true"
    assert re.search(refusal, str(refused))
    assert not (tmp_path / "refused.jsonl").exists()
    with trusted(custom_run.model):
        assert predict(custom_run, custom_run.checkpoint, tmp_path / "out.jsonl", *OPT_IN) is None
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 8


def test_a_checkpoint_cannot_turn_the_opt_in_on_by_itself(
    custom_run: SimpleNamespace, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Lightning applies a checkpoint's hyperparameters over the command line's; not this one. The checkpoint
    below says true and names a folder whose code has never run: it is refused, and that code stays unrun."""
    fresh = write_custom_code_folder(tiny_model_dir, tmp_path / "custom")
    checkpoint = torch.load(custom_run.checkpoint, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"] |= {"trust_remote_code": True, "model_name": str(fresh)}
    checkpoint["datamodule_hyper_parameters"]["trust_remote_code"] = True
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)
    refused = predict(custom_run, crafted, tmp_path / "out.jsonl")
    assert isinstance(refused, SystemExit) and re.search(REFUSED + r".*--model.trust_remote_code true", str(refused))
    with pytest.raises(InputError, match=REFUSED):
        export([str(crafted), "--output", str(tmp_path / "exported"), "--onnx-only"])
    assert not (fresh / "EXECUTED").exists()


def test_export_runs_the_code_only_with_its_own_opt_in(custom_run: SimpleNamespace, tmp_path: Path) -> None:
    for module in ("onnxruntime", "onnxscript"):  # the onnx extra
        pytest.importorskip(module)
    output = tmp_path / "exported"
    with pytest.raises(InputError, match=r"model.model_name '.*custom' " + REFUSED + r".*--trust-remote-code"):
        export([str(custom_run.checkpoint), "--output", str(output), "--onnx-only"])
    with trusted(custom_run.model):
        result = export([str(custom_run.checkpoint), "--output", str(output), "--onnx-only", "--trust-remote-code"])
    assert result["onnx_difference"] < 1e-4


class RunsCode:
    """Unpickling this object runs ``touch <marker>``: what a doctored checkpoint could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (shutil.copy, (__file__, str(self.marker)))


@pytest.mark.parametrize("command", ["test", "predict", "validate", "fit"])
def test_a_checkpoint_holding_code_is_refused_unrun(tmp_path: Path, command: str) -> None:
    marker = tmp_path / "unpickled"
    checkpoint = tmp_path / "doctored.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"note": RunsCode(marker)}}, checkpoint)
    exit_ = run_cli(command, "--config", CONFIGS / "quickstart.yaml", "--ckpt_path", checkpoint)
    message = str(exit_.code)
    assert message.startswith(f"bertcls: error: {checkpoint} holds Python objects besides tensors and plain values")
    assert "GLOBAL shutil.copy" in message
    assert not marker.exists()
    with pytest.raises(InputError, match="could run code"):
        export([str(checkpoint), "--output", str(tmp_path / "exported")])
    assert not marker.exists()


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    checkpoint = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:2000])
    exit_ = run_cli("test", "--config", CONFIGS / "quickstart.yaml", "--ckpt_path", checkpoint)
    assert str(exit_.code).startswith(f"bertcls: error: {checkpoint} could not be read as a PyTorch checkpoint")
