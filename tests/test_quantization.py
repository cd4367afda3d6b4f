"""int8 inference (``--model.quantize int8``): every linear layer quantized, quietly; the refusals (training, GPUs,
mixed precision); and the CPU lever detection of the benchmarks (``bertcls.inference.cpu_levers``).

``bertcls predict`` and ``bertcls export --quantize int8`` end to end: ``tests/test_predict.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from bertcls.callbacks.int8 import Int8Inference
from bertcls.errors import InputError
from bertcls.inference.cpu_levers import AVX2_ONLY, cpu_flags, cpu_levers
from bertcls.inference.quantization import is_quantized, quantize_linear_layers
from bertcls.model.module import BertClassifier


def test_every_linear_layer_is_quantized_without_library_noise(tiny_model_dir: Path) -> None:
    """Encoder, pooler and head: every ``nn.Linear`` becomes int8; the logits move a little; torch's deprecation
    notices for ``torch.ao.quantization`` stay hidden (this fails the day that API is gone)."""
    torch.manual_seed(0)
    model = BertClassifier(model_name=str(tiny_model_dir), task="single_label", label_names=["a", "b", "c"])
    model = model.eval()
    linear = sum(type(module) is nn.Linear for module in model.modules())
    batch = {"input_ids": torch.randint(1000, 20000, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    with torch.inference_mode():
        expected = model(batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert quantize_linear_layers(model) == linear == 2 * 6 + 1  # 6 per layer, and the classifier
    assert [str(warning.message) for warning in caught] == []
    assert is_quantized(model)
    assert sum(isinstance(module, DynamicQuantizedLinear) for module in model.modules()) == linear
    assert model.head.classifier.weight().dtype == torch.qint8
    with torch.inference_mode():
        actual = model(batch)
    difference = float((actual - expected).abs().max())
    assert 0 < difference < 0.05 * float(expected.abs().max()) + 1e-3


@pytest.mark.parametrize(
    ("stage", "accelerator", "precision", "message"),
    [
        ("fit", CPUAccelerator(), "32-true", "int8 is for inference"),
        ("predict", object(), "32-true", "runs on the CPU only .* uses object"),
        ("test", CPUAccelerator(), "bf16-mixed", "needs --trainer.precision 32-true, not bf16-mixed"),
    ],
)
def test_int8_is_refused_for_training_on_gpus_and_with_mixed_precision(
    stage: str, accelerator: object, precision: str, message: str
) -> None:
    trainer = SimpleNamespace(accelerator=accelerator, precision=precision)
    with pytest.raises(InputError, match=message):
        Int8Inference().setup(trainer, None, stage)
    Int8Inference().setup(SimpleNamespace(accelerator=CPUAccelerator(), precision="32-true"), None, "predict")


# --- CPU levers -----------------------------------------------------------------------------------------
AVX2_EPYC = "avx avx2 fma f16c bmi2"  # Zen 2 / Zen 3: no AVX-512
ZEN4 = "avx2 avx512f avx512bw avx512_vnni avx512_bf16"  # this project's machine
SAPPHIRE_RAPIDS = "avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8 amx_tile"
ALDER_LAKE = "avx2 avx_vnni"  # VNNI on 256-bit registers, no AVX-512


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    text = f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    path = tmp_path / "cpuinfo"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("flags", "environ", "bf16_fast", "vnni", "advice"),
    [
        (AVX2_EPYC, {}, False, False, "bf16: no bf16 units (avx512_bf16, amx_bf16): slower than fp32 here"),
        (ZEN4, {}, True, True, "bf16: fast (avx512_bf16): --trainer.precision bf16-mixed"),
        (SAPPHIRE_RAPIDS, {}, True, True, "bf16: fast (avx512_bf16, amx_bf16)"),
        (ALDER_LAKE, {}, False, True, "int8: VNNI"),
        # this machine restricted to AVX2, as bench/inference.py --avx2 does
        (ZEN4, AVX2_ONLY, False, False, "slower than fp32; int8: AVX2 without VNNI"),
        (ZEN4, {"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, True, True, "ONEDNN_MAX_CPU_ISA=avx512_core_bf16 (oneDNN"),
    ],
)
def test_levers_follow_the_cpu_flags_and_the_kernel_restrictions(
    tmp_path: Path, flags: str, environ: dict[str, str], bf16_fast: bool, vnni: bool, advice: str
) -> None:
    levers = cpu_levers(cpuinfo(tmp_path, flags), environ)
    assert (levers.bf16_fast, levers.int8_vnni, levers.int8) == (bf16_fast, vnni, True)
    assert advice in levers.describe()
    assert ("bf16-mixed" in levers.describe()) == bf16_fast, "bf16 recommended only where it is fast"
    assert ("Kernel restrictions: none." in levers.describe()) != bool(environ)
    assert ("ONNX Runtime ignores them" in levers.describe()) == bool(environ)


def test_no_cpuinfo_claims_no_lever(tmp_path: Path) -> None:
    levers = cpu_levers(tmp_path / "missing", {})
    assert not (levers.bf16_fast or levers.int8 or levers.int8_vnni)
    assert cpu_flags("processor : 0\nflags : avx2 avx512f\nflags : sse\n") == {"avx2", "avx512f"}
