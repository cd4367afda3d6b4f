"""A fine-tuned ``BertClassifier`` as an ONNX model, and a parity check of it under ONNX Runtime.

Every task and pooling exports to one signature, so one serving loop fits all models:

- inputs ``input_ids``, ``attention_mask``, ``token_type_ids``: int64, ``[batch, sequence]`` (pass zeros for
  ``token_type_ids`` outside the pair task, as the tokenizer does);
- output ``logits``: float32, ``[batch, labels]`` (single-label, pair, multi-label: apply softmax or sigmoid
  yourself), or ``[batch, sequence, labels]`` (token).

Both axes are dynamic. The head's pooling (``cls``, ``pooler``, ``mean``) is part of the graph; the
multi-label thresholds are not (they are plain numbers in the checkpoint and in ``bertcls export``'s
config).

The exporter is PyTorch's default one since 2.9, ``torch.onnx.export(..., dynamo=True)``: it captures the
model with ``torch.export`` (symbolic batch and sequence sizes, so nothing of the example input is baked in)
and translates it with onnxscript's ATen library, then optimises the graph. The legacy TorchScript
exporter (``dynamo=False``) also gives a correct BERT graph today, but only because the data-dependent
branches it freezes (transformers' mask padding check, SDPA's ``is_causal``) happen to be constant for an
encoder (it warns about each), and it is deprecated with a warning on every call. The dynamo exporter
needs ``onnxscript``, which is why the ``onnx`` extra lists it.

Parity (``check_onnx_parity``, MiniLM, torch 2.13, onnxruntime 1.32, CPU): the logits agree to a few 1e-6 at
magnitudes up to 5, for every task and pooling (``tests/test_onnx.py``). One input gives other logits than
PyTorch: a row whose ``attention_mask`` is all zeros (no token at all, which no tokenizer produces, as [CLS] is
always there), where PyTorch attends uniformly over the padding.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from bertcls.errors import InputError

if TYPE_CHECKING:
    from bertcls.model.module import BertClassifier

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
ONNX_EXTRA = "pip install 'bertcls[onnx]'"


class LogitsModel(nn.Module):
    """``BertClassifier.forward`` with the batch's tensors as positional arguments, the form exporters trace."""

    def __init__(self, model: BertClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.model({"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids})


def export_onnx(model: BertClassifier, path: Path, opset: int | None = None) -> Path:
    """Write ``model`` (its encoder and head, in eval mode) to ``path`` as ONNX; return ``path``.

    ``opset``: the ai.onnx opset to target; by default the exporter's own (20 with torch 2.13 and onnxscript
    0.7; lower ones are reached by ONNX's version converter, with a warning). Weights of a
    model over 2 GB go to an external data file beside ``path`` (ONNX's protobuf limit). The model's
    training mode is restored afterwards.
    """
    if model.head is None:
        raise InputError("The model has no head (no task or label names): there is nothing to export.")
    require_module("onnxscript", "the ONNX exporter of PyTorch")
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise InputError(
            f"ONNX export needs a PyTorch with the torch.export-based exporter (torch.onnx.export(dynamo=True)); "
            f"this is {torch.__version__}: upgrade it."
        )
    path = Path(path)
    example = _example_inputs(model)
    dynamic = _dynamic_shapes(model)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), quiet_logger("torch.onnx._internal.exporter._registration"):
            # torch.export's notes on tracing transformers' code (deprecated tree helpers, renamed axes).
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                LogitsModel(model),
                example,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic,
                verbose=False,
            )
    finally:
        model.train(was_training)
    _save(program, path)
    return path


def _dynamic_shapes(model: BertClassifier) -> dict[str, dict[int, Any]]:
    """Batch and sequence axes of every input symbolic; the sequence up to the position embeddings' size.

    Without that bound torch.export finds the guard ``sequence <= max_position_embeddings`` in the encoder and
    the ONNX exporter has to relax the constraint itself.
    """
    positions = getattr(model.encoder.config, "max_position_embeddings", None)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=int(positions)) if positions else torch.export.Dim("sequence")
    return {name: {0: batch, 1: sequence} for name in INPUT_NAMES}


@contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Raise a logger to ERROR for a while (the exporter warns that torchvision's operators are not registered)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _example_inputs(model: BertClassifier) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two rows of eight tokens, the second padded and with a second segment: the general case of every input.

    Sizes above 1 keep torch.export from specialising an axis to 1 (it treats sizes 0 and 1 as static).
    """
    device = next(model.parameters()).device
    config = model.encoder.config
    vocabulary = int(getattr(config, "vocab_size", 1000))
    input_ids = torch.arange(8, device=device).repeat(2, 1) % vocabulary
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    token_type_ids = torch.zeros_like(input_ids)
    if int(getattr(config, "type_vocab_size", 1)) > 1:
        token_type_ids[:, 4:] = 1
    return input_ids, attention_mask, token_type_ids


def _save(program: Any, path: Path) -> None:
    """Save into a scratch folder beside ``path``, then move the file(s) into place: no half-written model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        program.save(scratch / path.name)  # external data (over 2 GB) is named after the file: moved with it
        for written in sorted(scratch.iterdir(), key=lambda file: file.name == path.name):
            os.replace(written, path.parent / written.name)  # the .onnx file last
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- running it --------------------------------------------------------------------------------------
def onnx_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for ``path`` (``threads``: intra-op threads; default: ONNX Runtime's)."""
    ort = require_module("onnxruntime", "running ONNX models")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_inputs(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The model's three int64 inputs from a collated batch (other keys ignored; no ``token_type_ids``: zeros)."""
    inputs = {name: _int64(batch[name]) for name in INPUT_NAMES if batch.get(name) is not None}
    inputs.setdefault("token_type_ids", np.zeros_like(inputs["input_ids"]))
    return inputs


def _int64(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=np.int64)


def check_onnx_parity(model: BertClassifier, path: Path, batch: Mapping[str, Any]) -> float:
    """The largest absolute difference between the logits of ``model`` (eval mode) and of the ONNX model at
    ``path`` under ONNX Runtime, on ``batch`` (``input_ids``, ``attention_mask``, optionally ``token_type_ids``).

    Token logits count at real tokens only: those at padding positions are never read, and the two runtimes
    differ more there (a few 1e-6 on MiniLM, against about 1e-6 at real tokens).
    """
    inputs = onnx_inputs(batch)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            expected = model({name: torch.from_numpy(array).to(device) for name, array in inputs.items()})
    finally:
        model.train(was_training)
    (actual,) = onnx_session(path).run([OUTPUT_NAME], inputs)
    expected_array = expected.float().cpu().numpy()
    if actual.shape != expected_array.shape:
        raise ValueError(f"ONNX logits have shape {actual.shape}, PyTorch's {expected_array.shape}")
    difference = np.abs(actual.astype(np.float32) - expected_array)
    if difference.ndim == 3:  # token logits: [batch, sequence, labels]
        difference = difference[inputs["attention_mask"].astype(bool)]
    return float(difference.max())


def require_module(module: str, purpose: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise InputError(f"{purpose} needs the '{module}' package, which is not installed: {ONNX_EXTRA}") from error
