"""An exported Hugging Face folder back as a bertcls checkpoint, so ``bertcls predict --ckpt_path FOLDER`` works.

The inverse of ``bertcls.export.hf_folder`` and ``bertcls.export.st_folder`` (mean pooling): the encoder's weights,
the classifier (the ``cls`` pooling's scale undone), the labels and the ``bertcls`` section of ``config.json`` (task,
pooling, max_length, thresholds), and the tokenizer's files, in the form of a checkpoint of ``bertcls fit``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from bertcls.atomic_files import atomic_write
from bertcls.errors import InputError
from bertcls.export.hf_folder import CLS_POOLER_SCALE
from bertcls.export.st_folder import mean_pooled
from bertcls.model.bundled_tokenizer import TOKENIZER_CHECKPOINT_KEY

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def is_exported_folder(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and "bertcls" in json.loads(config.read_text(encoding="utf-8"))


def checkpoint_file(folder: Path, cache_root: Path) -> Path:
    """The folder as a checkpoint file in ``cache_root/exported/`` (written once per folder content)."""
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise InputError(f"{folder} has no model.safetensors: export it again with `bertcls export`.")
    files = [folder / "config.json", *sorted(folder.rglob("*.safetensors"))]  # a sentence-transformers head too
    digest = hashlib.sha256(b"".join(file.read_bytes() for file in files)).hexdigest()[:32]
    path = cache_root / "exported" / f"{digest}.ckpt"
    if not path.is_file():
        checkpoint = checkpoint_from_folder(folder)
        atomic_write(path, lambda file: torch.save(checkpoint, file))
    return path


def checkpoint_from_folder(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    section = config.pop("bertcls")
    task, pooling = section["task"], section.get("pooling") or "cls"
    labels = [config["id2label"][str(index)] for index in range(len(config["id2label"]))]
    weights = load_file(folder / "model.safetensors")
    if mean_pooled(section):
        weights = sentence_transformers_weights(folder, weights)
    state = {f"encoder.{name[len('bert.') :]}": tensor for name, tensor in weights.items() if name.startswith("bert.")}
    if task == "token" or pooling != "pooler":
        state = {name: tensor for name, tensor in state.items() if not name.startswith("encoder.pooler.")}
    classifier = weights["classifier.weight"]
    if task != "token" and pooling == "cls":
        classifier = classifier * CLS_POOLER_SCALE
    state |= {"head.classifier.weight": classifier, "head.classifier.bias": weights["classifier.bias"]}
    if "thresholds" in section:
        state["head.thresholds"] = torch.tensor(section["thresholds"], dtype=torch.float)
    # transformers' own BERT (an auto_map from older exports would ask for code the folder does not carry).
    encoder_config = {key: value for key, value in config.items() if key not in ("id2label", "label2id", "auto_map")}
    encoder_config["architectures"] = ["BertModel"]
    tokenizer = {
        name: (folder / name).read_text(encoding="utf-8") for name in TOKENIZER_FILES if (folder / name).is_file()
    }
    return {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": state,
        "hyper_parameters": {
            "model_name": str(folder),
            "task": task,
            "label_names": labels,
            "pooling": pooling,
            "dropout": config.get("classifier_dropout"),
            "encoder_config": encoder_config,
        },
        # predict joins the texts of several columns as the training run did
        "datamodule_hyper_parameters": {key: section.get(key) for key in ("max_length", "text_separator")},
        TOKENIZER_CHECKPOINT_KEY: tokenizer,
    }


def sentence_transformers_weights(folder: Path, encoder: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A sentence-transformers folder's weights named as a Hugging Face folder's: the encoder at its root, the
    classifier in its ``Dense`` module (named in ``modules.json``)."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    dense = next(module["path"] for module in modules if module["type"].endswith(".Dense"))
    head = load_file(folder / dense / "model.safetensors")
    return {f"bert.{name}": tensor for name, tensor in encoder.items()} | {
        f"classifier.{name.removeprefix('linear.')}": tensor for name, tensor in head.items()
    }
