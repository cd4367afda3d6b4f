"""int8 dynamic quantization of a model's linear layers, for inference on CPUs (``--model.quantize int8``).

Every ``nn.Linear`` (the encoder's attention and feed-forward layers, BERT's pooler, the head's classifier) is
replaced by an ``Int8Linear``: fbgemm's int8 product (``torch.ops.quantized.linear_dynamic``) with

- weights quantized with one scale per output row (per channel), not one per matrix;
- inputs quantized with one scale per token: each token's vector is divided by its largest magnitude before
  fbgemm quantizes the whole batch with one scale, and the output rows are multiplied back. With fbgemm's one
  scale per batch, a single outlier token (BERT has some) coarsened every other token of the batch, and a
  sentence's logits depended on the batch it was in.

Embeddings, LayerNorm, softmax and the attention's batched products stay fp32.

On CPUs without VNNI, fbgemm multiplies with AVX2's ``vpmaddubsw``, whose int16 pair sums saturate for 8-bit
inputs times 8-bit weights; the weights then get 7 bits (|w| <= 63: the sums stay below 2**15) while the inputs
keep their 8. (fbgemm's own remedy, ``reduce_range``, takes the bit from the inputs: measured worse.) The figures,
label agreement with fp32 on real data: docs/inference.md and ``bench/quantization.py``.

``torch.ops.quantized`` is the quantized-tensor API that PyTorch marks deprecated in favour of torchao. torchao's
equivalent (``quantize_`` with ``Int8DynamicActivationInt8WeightConfig``) ran MiniLM at 0.6x fp32 on this
project's CPU in eager mode (it needs ``torch.compile`` to be fast) while fbgemm's kernels ran it at 1.9x, so the
deprecated API is used, its notices silenced here, and ``tests/test_quantization.py`` fails the day it is gone.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from bertcls.inference.cpu_levers import cpu_levers

Quantization = Literal["int8"]

# What torch prints when a tensor is quantized (quantized-tensor deprecation).
_DEPRECATION_NOTICES = (r"torch\.ao\.quantization is deprecated", r"torch\.quantize_per_tensor, torch\.quantize_per")


class TokenScales:
    """Each token's input divided by its largest magnitude, and those magnitudes, computed once for the layers
    that read the same tensor (attention's query, key and value: a third of the scaling work)."""

    def __init__(self) -> None:
        self._inputs: torch.Tensor | None = None
        self._result: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._inputs is not inputs or self._result is None:
            scales = torch.linalg.vector_norm(inputs, ord=float("inf"), dim=-1, keepdim=True).clamp_min_(1e-12)
            self._inputs, self._result = inputs, (inputs / scales, scales)
        return self._result

    def clear(self) -> None:
        self._inputs = self._result = None


class Int8Linear(nn.Module):
    """``linear`` with int8 weights (a scale per output row) and int8 inputs (a scale per token), fp32 bias."""

    def __init__(self, linear: nn.Linear, weight_bits: int = 8, token_scales: TokenScales | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.token_scales = token_scales or TokenScales()
        weight = linear.weight.detach().float()
        largest = 2 ** (weight_bits - 1) - 1
        scales = (weight.abs().amax(dim=1) / largest).clamp_min(1e-12).double()
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():
            for notice in _DEPRECATION_NOTICES:
                warnings.filterwarnings("ignore", message=notice)
            quantized = torch.quantize_per_channel(weight, scales, zero_points, axis=0, dtype=torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(quantized, None)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        scaled, scales = self.token_scales(inputs)
        outputs = torch.ops.quantized.linear_dynamic(scaled, self._packed, reduce_range=False)
        return outputs.mul_(scales) if self.bias is None else torch.addcmul(self.bias, outputs, scales)

    def weight(self) -> torch.Tensor:
        """The int8 weight matrix (a quantized tensor), as PyTorch's quantized linear layers give it."""
        return torch.ops.quantized.linear_unpack(self._packed)[0]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def weight_bits_for_this_cpu() -> int:
    """8 where fbgemm multiplies with VNNI (int32 sums), 7 where AVX2's int16 pair sums could saturate."""
    return 8 if cpu_levers().int8_vnni else 7


def quantize_linear_layers(model: nn.Module, weight_bits: int | None = None) -> int:
    """Replace every ``nn.Linear`` of ``model`` (in place) by an ``Int8Linear``; return how many were replaced.

    ``weight_bits`` defaults to this CPU's (``weight_bits_for_this_cpu``). CPU only: fbgemm has no GPU kernels.
    """
    bits = weight_bits or weight_bits_for_this_cpu()
    shared = TokenScales()  # the model's linear layers run one after another: one memo serves them all
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, Int8Linear(child, bits, shared))
                count += 1
    model.register_forward_hook(lambda *_: shared.clear())  # no batch kept alive between forward passes
    return count


def is_quantized(model: nn.Module) -> bool:
    """Whether ``quantize_linear_layers`` has run on ``model``: no float ``nn.Linear`` is left."""
    return not any(type(module) is nn.Linear for module in model.modules())
