"""``bertcls export --quantize int8``: an int8 ONNX model (``model.int8.onnx``) quantized by ONNX Runtime, and
its check against the checkpoint's model, by the labels they give.

``onnxruntime.quantization.quantize_dynamic`` stores the weights of the matrix products as int8 (here one scale
per output column, 7 bits: ``reduce_range``, so that AVX2's int16 pair sums cannot saturate on any CPU) and
quantizes each product's input at run time with one scale for the whole batch. One outlier token then coarsens
every other token of the batch; so the model quantized is a copy whose linear layers compute
``(x / s) @ W * s + b`` with ``s`` each token's largest ``|x|`` (``TokenScaledLinear``: equal to ``x @ W + b`` in
fp32), which makes ORT's one scale per batch a scale per token, as ``--model.quantize int8`` has in PyTorch.
Measured on the quickstart's model (Rotten Tomatoes validation): label agreement with fp32 96.95% with ORT's
defaults, 98.94% with per-column weights, 99.30% with the token scales.

Its logits differ from fp32 by far more than the fp32 export's bound (``MAX_DIFFERENCE``), so the check compares
the decisions: the label of each sentence (token task: of each real token; multi-label: each label's decision
at its threshold).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from bertcls.errors import InputError
from bertcls.export.onnx import OUTPUT_NAME, export_onnx, onnx_inputs, onnx_session, quiet_logger, require_module

if TYPE_CHECKING:
    from bertcls.model.module import BertClassifier


def export_int8(model: BertClassifier, path: Path, batch: dict[str, torch.Tensor]) -> float:
    """Write and check ``model.int8.onnx`` beside the fp32 ONNX model at ``path``; return the share of agreeing
    decisions. A model whose int8 version changes a decision on the test sentences is refused (file removed)."""
    target = quantize_onnx(model, path.with_suffix(".int8.onnx"))
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


class TokenScaledLinear(nn.Module):
    """``linear`` as ``(x / s) @ W * s + b``, ``s`` each token's largest ``|x|``: the same in fp32, and a product
    whose input spans [-1, 1] in every token, for a quantizer with one input scale per batch."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)  # MatMul's B
        self.bias = linear.bias

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        scales = torch.linalg.vector_norm(inputs, ord=float("inf"), dim=-1, keepdim=True).clamp_min(1e-12)
        outputs = torch.matmul(inputs / scales, self.weight) * scales
        return outputs if self.bias is None else outputs + self.bias


def quantize_onnx(model: BertClassifier, target: Path) -> Path:
    """Write ``model``'s int8 ONNX model to ``target`` (its linear layers token-scaled, then quantized by ONNX
    Runtime); return ``target``. ``model`` itself is left as it was."""
    require_module("onnxruntime", "int8 quantization of ONNX models")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scaled = copy.deepcopy(model)
    for parent in list(scaled.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, TokenScaledLinear(child))
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=target.parent) as scratch:
        fp32 = export_onnx(scaled, Path(scratch) / "token-scaled.onnx")
        with quiet_logger("root"):  # its advice to run the pre-processing that static quantization needs
            quantize_dynamic(fp32, target, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
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
