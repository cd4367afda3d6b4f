"""A model or tokenizer folder that asks to run its own Python code (``auto_map``) is refused, and its code never
runs: transformers' ``trust_remote_code`` stays off, without the question it asks on a terminal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bertcls.data.datamodule import ClassificationDataModule
from bertcls.errors import InputError
from bertcls.model.encoder import load_encoder

PAYLOAD = """
import pathlib
pathlib.Path(__file__).with_name("EXECUTED").write_text("the folder's code ran")
from transformers import BertConfig, BertModel, BertTokenizerFast
class CustomConfig(BertConfig):
    model_type = "custom-bert"
class CustomModel(BertModel):
    config_class = CustomConfig
class CustomTokenizer(BertTokenizerFast):
    pass
"""


@pytest.fixture
def custom_code_folder(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny BERT as an unknown architecture and tokenizer class, whose configs point at a Python file in the
    folder (transformers cannot load it without running that file)."""
    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "custom_code.py").write_text(PAYLOAD)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom_code.CustomConfig", "AutoModel": "custom_code.CustomModel"}
    config["model_type"] = "custom-bert"
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, "custom_code.CustomTokenizer"]}
    tokenizer_config["tokenizer_class"] = "CustomTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


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
