"""``bertcls export --quantize int8``: ONNX Runtime's int8 dynamic quantization of an exported ``model.onnx``,
and its check against the checkpoint's model, by the labels they give.

``onnxruntime.quantization.quantize_dynamic`` stores the weights of the matrix products (``MatMul``, ``Gemm``)
as int8 and quantizes their inputs per batch at run time, as ``--model.quantize int8`` does in PyTorch. Its
logits differ from fp32 by far more than the fp32 export's bound (``MAX_DIFFERENCE``), so the check compares
the decisions: the label of each sentence (token task: of each real token; multi-label: each label's decision
at its threshold).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bertcls.errors import InputError
from bertcls.export.onnx import OUTPUT_NAME, onnx_inputs, onnx_session, quiet_logger, require_module

if TYPE_CHECKING:
    from bertcls.model.module import BertClassifier


def export_int8(model: BertClassifier, path: Path, batch: dict[str, torch.Tensor]) -> float:
    """Write and check ``model.int8.onnx`` beside the fp32 ONNX model at ``path``; return the share of agreeing
    decisions. A model whose int8 version changes a decision on the test sentences is refused (file removed)."""
    target = quantize_onnx(path)
    same, total = label_agreement(model, target, batch)
    print(f"ONNX int8 model: {target} (same labels as the checkpoint on {same} of {total} test decisions)")
    if same < total:
        target.unlink()
        raise InputError(
            f"int8 quantization changes {total - same} of the {total} decisions of this model on bertcls export's "
            f"test sentences (its margins are too small for int8 weights): {target.name} was not kept. Serve "
            f"{path.name} (fp32), or measure int8 on your own data first (python bench/quantization.py)."
        )
    return same / total


def quantize_onnx(path: Path) -> Path:
    """Write ``<name>.int8.onnx`` beside the fp32 model at ``path``; return its path."""
    require_module("onnxruntime", "int8 quantization of ONNX models")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = path.with_suffix(".int8.onnx")
    with quiet_logger("root"):  # its advice to run the pre-processing that static quantization needs
        quantize_dynamic(path, target, weight_type=QuantType.QInt8)
    return target


def label_agreement(model: BertClassifier, path: Path, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """How many decisions of the ONNX model at ``path`` equal ``model``'s on ``batch``, and how many there are."""
    inputs = onnx_inputs(batch)
    with torch.inference_mode():
        expected = model({name: torch.from_numpy(array) for name, array in inputs.items()}).float().numpy()
    (actual,) = onnx_session(path).run([OUTPUT_NAME], inputs)
    same = decisions(model, expected) == decisions(model, actual)
    if expected.ndim == 3:  # token logits: real tokens only
        same = same[inputs["attention_mask"].astype(bool)]
    return int(same.sum()), int(same.size)


def decisions(model: BertClassifier, logits: np.ndarray) -> np.ndarray:
    """The label index of each row (or token); multi-label: each label's yes or no at the head's thresholds."""
    if model.task.name == "multi_label":
        thresholds: Any = model.head.thresholds.float().cpu().numpy()
        return 1 / (1 + np.exp(-logits)) >= thresholds
    return logits.argmax(axis=-1)
