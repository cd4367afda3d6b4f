"""A fine-tuned bertcls model with ``mean`` pooling as a sentence-transformers folder.

transformers' BERT classes classify the [CLS] state (see ``bertcls.export.hf_folder``), so a mean-pooled model has
no Hugging Face task class; sentence-transformers composes an encoder with a mean pooling module, and its ``Dense``
module without activation is the classifier. ``SentenceTransformer(folder).encode(texts)`` (pairs: a list of
``(text, text)`` tuples) returns bertcls' logits, with no bertcls code:

- ``Transformer`` (the folder's root): the fine-tuned ``BertModel``, whose ``config.json`` carries ``id2label``,
  ``label2id`` and the ``bertcls`` section as the Hugging Face folder's, and the tokenizer, whose
  ``model_max_length`` (where sentence-transformers truncates) is the training run's ``max_length``;
- ``Pooling`` (``1_Pooling``): the mean of the real tokens' states, bertcls' ``mean`` pooling;
- ``Dense`` (``2_Dense``): ``W x + b``, the classifier (``nn.Identity`` activation): the logits. Apply a softmax
  (single-label, pair), or a sigmoid and ``config.json``'s ``bertcls.thresholds`` (multi-label).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import AutoModel

from bertcls.errors import InputError
from bertcls.export.checkpoint import write_tokenizer
from bertcls.export.hf_folder import set_tokenizer_max_length, task_config

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from bertcls.model.module import BertClassifier

SENTENCE_TRANSFORMERS_EXTRA = "pip install 'bertcls[sentence-transformers]'"


def mean_pooled(settings: dict[str, Any]) -> bool:
    """Whether a model's hyperparameters (or ``bertcls`` section) are those of a sequence head on the mean."""
    return settings.get("task") != "token" and settings.get("pooling") == "mean"


def export_st_folder(
    checkpoint: dict[str, Any], folder: Path, source: Path, trust_remote_code: bool = False
) -> SentenceTransformer:
    """Write the checkpoint as a sentence-transformers folder at ``folder`` (replaced if it exists); return the model.

    ``trust_remote_code``: the tokenizer may run the Python code it comes with (see ``bertcls.remote_code``).
    """
    if importlib.util.find_spec("sentence_transformers") is None:
        raise InputError(
            f"{source} was trained with pooling 'mean', which bertcls exports as a sentence-transformers folder "
            "(transformers' classes cannot average the tokens), and sentence-transformers is not installed: "
            f"{SENTENCE_TRANSFORMERS_EXTRA}. Or export the whole model to ONNX only (--onnx-only)."
        )
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

    config = task_config(checkpoint, source)
    state = checkpoint["state_dict"]
    encoder = AutoModel.from_config(config)
    weights = {name.removeprefix("encoder."): tensor for name, tensor in state.items() if name.startswith("encoder.")}
    # Mean pooling never reads BERT's pooler (dropped in training): zeros, so that loading reports no missing weights.
    weights |= {name: torch.zeros_like(tensor) for name, tensor in encoder.state_dict().items() if name not in weights}
    encoder.load_state_dict(weights)
    with tempfile.TemporaryDirectory(prefix="bertcls-st-") as scratch:
        encoder.save_pretrained(scratch)
        write_tokenizer(checkpoint, checkpoint["hyper_parameters"], Path(scratch), source, trust_remote_code)
        max_length = config.bertcls.get("max_length")
        if max_length:
            set_tokenizer_max_length(Path(scratch), int(max_length), trust_remote_code)
        classifier = Dense(
            config.hidden_size,
            config.num_labels,
            activation_function=nn.Identity(),  # logits, as the Hugging Face folder's and the ONNX model's
            init_weight=state["head.classifier.weight"].clone(),
            init_bias=state["head.classifier.bias"].clone(),
        )
        pooling = Pooling(config.hidden_size, pooling_mode="mean")
        model = SentenceTransformer(modules=[Transformer(scratch), pooling, classifier], device="cpu")
        if folder.exists():
            shutil.rmtree(folder)
        model.save(str(folder))
    return model.eval()


@torch.inference_mode()
def logits_difference(
    model: BertClassifier, exported: SentenceTransformer, texts: list[str], batch: dict[str, torch.Tensor]
) -> float:
    """The largest |difference| between the logits of ``model`` on ``batch`` (``texts`` tokenized) and those that
    ``exported.encode`` gives for ``texts``."""
    actual = exported.encode(texts, convert_to_tensor=True, batch_size=len(texts))
    return float((model(batch) - actual.cpu()).abs().max())
