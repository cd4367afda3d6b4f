"""A fine-tuned bertcls model as a standard Hugging Face task model folder.

The folder loads with ``AutoModelForSequenceClassification`` / ``AutoModelForTokenClassification`` and
``transformers.pipeline`` alone, no bertcls code, and gives bertcls' predictions:

- token task: ``BertForTokenClassification`` (dropout, linear on every piece): the same computation;
- sequence tasks (single-label, pair, multi-label): ``BertForSequenceClassification``, which classifies
  ``tanh(W h_cls + b)``, BERT's pooler.

  - pooling ``pooler``: the same computation.
  - pooling ``cls``: the pooler is made the identity up to ``tanh(e x) / e = x (1 - (e x)^2 / 3 + ...)``:
    ``W = e I``, ``b = 0`` and the classifier's weights divided by ``e``. With ``e = 1e-4`` and ``|x| < 100`` the
    relative error is below ``4e-5`` (in practice the logits agree to about ``1e-6``).
  - pooling ``mean`` has no counterpart in transformers' BERT classes: refused; ``bertcls export`` writes such a
    model as a sentence-transformers folder (``bertcls.export.st_folder``).

``config.json`` carries ``id2label``/``label2id``, the ``problem_type`` and a ``bertcls`` section (task,
pooling, maximum length, multi-label decision thresholds), and the tokenizer's ``model_max_length`` is the
training run's ``max_length``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    PretrainedConfig,
    PreTrainedModel,
)

from bertcls.errors import InputError
from bertcls.export.checkpoint import write_tokenizer
from bertcls.remote_code import load_tokenizer

CLS_POOLER_SCALE = 1e-4  # e above: small enough that tanh is linear, large enough for float32
PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "pair": "single_label_classification",
    "multi_label": "multi_label_classification",
}


def export_hf_folder(
    checkpoint: dict[str, Any], folder: Path, source: Path, trust_remote_code: bool = False
) -> PreTrainedModel:
    """Write the checkpoint's model, config and tokenizer into ``folder`` (replaced if it exists); return the model.

    ``trust_remote_code``: the tokenizer may run the Python code it comes with (see ``bertcls.remote_code``).
    """
    model = task_model(checkpoint, source)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    model.save_pretrained(folder, safe_serialization=True)
    write_tokenizer(checkpoint, checkpoint["hyper_parameters"], folder, source, trust_remote_code)
    max_length = bertcls_section(checkpoint).get("max_length")
    if max_length:
        set_tokenizer_max_length(folder, int(max_length), trust_remote_code)
    return model


def task_model(checkpoint: dict[str, Any], source: Path) -> PreTrainedModel:
    """The transformers task model equivalent to the checkpoint's encoder and head, in eval mode."""
    config = task_config(checkpoint, source)
    hparams = checkpoint["hyper_parameters"]
    task = hparams["task"]
    state = checkpoint["state_dict"]
    encoder = {name.removeprefix("encoder."): tensor for name, tensor in state.items() if name.startswith("encoder.")}
    head = {name.removeprefix("head."): tensor for name, tensor in state.items() if name.startswith("head.")}
    if task == "token":
        model = BertForTokenClassification(config)
        weights = {f"bert.{name}": tensor for name, tensor in encoder.items() if not name.startswith("pooler.")}
    else:
        model = BertForSequenceClassification(config)
        weights = {f"bert.{name}": tensor for name, tensor in encoder.items()}
        weights |= pooler_weights(hparams.get("pooling", "cls"), config.hidden_size, source, encoder)
    weights["classifier.weight"] = head["classifier.weight"]
    weights["classifier.bias"] = head["classifier.bias"]
    if task != "token" and hparams.get("pooling", "cls") == "cls":
        weights["classifier.weight"] = head["classifier.weight"] / CLS_POOLER_SCALE  # tanh(e x) / e = x
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{source}: the weights do not fit {type(model).__name__}: missing {missing}, extra {unexpected}"
        )
    return model.eval()


def task_config(checkpoint: dict[str, Any], source: Path) -> PretrainedConfig:
    """The encoder's transformers config with the labels, problem type and ``bertcls`` section added."""
    hparams = checkpoint["hyper_parameters"]
    task, labels = hparams.get("task"), list(hparams.get("label_names") or [])
    if not task or not labels:
        raise InputError(f"{source} has no task or no label names: it is not a trained bertcls classifier.")
    # transformers' own BERT classes, so no auto_map: the folder carries no code and loads without any.
    architecture = {key: value for key, value in hparams["encoder_config"].items() if key != "auto_map"}
    config = AutoConfig.for_model(**architecture)
    if config.model_type != "bert":
        raise InputError(
            f"{source}: exporting a '{config.model_type}' encoder is not supported yet (only BERT's task classes "
            "are mapped). Export to ONNX instead (bertcls export --onnx-only), or use the checkpoint with bertcls."
        )
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: index for index, name in enumerate(labels)}
    config.problem_type = PROBLEM_TYPES.get(task)
    config.bertcls = bertcls_section(checkpoint)
    if hparams.get("dropout") is not None:
        config.classifier_dropout = hparams["dropout"]
    return config


def bertcls_section(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What bertcls knows beyond transformers' config: task, pooling, max_length, the columns and separator of texts
    joined from several columns, multi-label thresholds."""
    hparams = checkpoint["hyper_parameters"]
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    section: dict[str, Any] = {"task": hparams.get("task"), "pooling": hparams.get("pooling")}
    if data.get("max_length"):
        section["max_length"] = int(data["max_length"])
    if isinstance(columns := data.get("text_column"), list) and len(columns) > 1:  # texts joined from columns
        section["text_column"], section["text_separator"] = columns, data.get("text_separator")
    thresholds = checkpoint["state_dict"].get("head.thresholds")
    if thresholds is not None:
        section["thresholds"] = [round(float(value), 6) for value in thresholds]
    return section


def pooler_weights(pooling: str, hidden_size: int, source: Path, encoder: dict[str, torch.Tensor]) -> dict:
    if pooling == "pooler":
        return {}  # trained with the encoder's own pooler: its weights are in the encoder's state
    if pooling == "cls":
        return {
            "bert.pooler.dense.weight": torch.eye(hidden_size) * CLS_POOLER_SCALE,
            "bert.pooler.dense.bias": torch.zeros(hidden_size),
        }
    raise InputError(
        f"{source} was trained with pooling '{pooling}', which transformers' BertForSequenceClassification cannot "
        "compute (it classifies the [CLS] state through the pooler), so it has no transformers.pipeline folder. "
        f"`bertcls export {source} --output DIR` writes it as a sentence-transformers folder instead "
        "(SentenceTransformer(DIR).encode(texts) gives the logits; "
        "needs pip install 'bertcls[sentence-transformers]'), "
        "and --onnx adds DIR/model.onnx (--onnx-only: ONNX alone, no sentence-transformers needed); or train with "
        "--model.pooling cls (the shipped configs' default) or pooler for a folder that transformers.pipeline loads. "
        "See docs/export.md."
    )


def set_tokenizer_max_length(folder: Path, max_length: int, trust_remote_code: bool = False) -> None:
    tokenizer = load_tokenizer(str(folder), "--output", trust_remote_code)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(folder)
