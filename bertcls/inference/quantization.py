"""int8 dynamic quantization of a model's linear layers, for inference on CPUs (``--model.quantize int8``).

Every ``nn.Linear`` (the encoder's attention and feed-forward layers, BERT's pooler, the head's classifier) is
replaced by PyTorch's ``DynamicQuantizedLinear``: weights stored as int8 (one scale per matrix), activations
quantized per batch to 7-bit unsigned values (``reduce_range``: the products cannot saturate the int16 sums of
AVX2's ``vpmaddubsw``), products summed in int32 by fbgemm. Embeddings, LayerNorm, softmax and the attention's
batched products stay fp32.

The API is ``torch.ao.quantization.quantize_dynamic``, which PyTorch marks deprecated in favour of torchao.
torchao's equivalent (``quantize_`` with ``Int8DynamicActivationInt8WeightConfig``) ran MiniLM at 0.6x fp32 on
this project's CPU in eager mode (it needs ``torch.compile`` to be fast) and prints warnings on import, while
fbgemm's kernels ran it at 1.9x: so the deprecated API is used, its deprecation notices silenced here, and
``tests/test_quantization.py`` fails the day it is gone.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

Quantization = Literal["int8"]

# What torch prints on every quantize_dynamic call (module deprecation, quantized-tensor deprecation).
_DEPRECATION_NOTICES = (r"torch\.ao\.quantization is deprecated", r"torch\.quantize_per_tensor, torch\.quantize_per")


def quantize_linear_layers(model: nn.Module) -> int:
    """Replace every ``nn.Linear`` of ``model`` (in place, put in eval mode) by its int8 dynamic version.

    Returns how many were replaced. Runs on CPU only: fbgemm has no GPU kernels.
    """
    count = sum(isinstance(module, nn.Linear) for module in model.modules())
    with warnings.catch_warnings():
        for notice in _DEPRECATION_NOTICES:
            warnings.filterwarnings("ignore", message=notice)
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return count


def is_quantized(model: nn.Module) -> bool:
    """Whether ``quantize_linear_layers`` has run on ``model``: no float ``nn.Linear`` is left."""
    return not any(type(module) is nn.Linear for module in model.modules())
