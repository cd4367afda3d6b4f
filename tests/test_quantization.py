"""int8 inference (``--model.quantize int8``): every linear layer quantized, quietly; the refusals (training, GPUs,
mixed precision); and the CPU lever detection of the benchmarks (``bertcls.inference.cpu_levers``).

``bertcls predict`` and ``bertcls export --quantize int8`` end to end: ``tests/test_predict.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from torch import nn

from bertcls.callbacks.int8 import Int8Inference
from bertcls.errors import InputError
from bertcls.inference.cpu_levers import AVX2_ONLY, cpu_flags, cpu_levers
from bertcls.inference.quantization import Int8Linear, is_quantized, quantize_linear_layers
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
    assert sum(isinstance(module, Int8Linear) for module in model.modules()) == linear
    assert model.head.classifier.weight().dtype == torch.qint8
    with torch.inference_mode():
        actual = model(batch)
    difference = float((actual - expected).abs().max())
    assert 0 < difference < 0.05 * float(expected.abs().max()) + 1e-3


def test_a_sentence_gets_the_same_int8_logits_in_any_batch(tiny_model_dir: Path) -> None:
    """Inputs are quantized with a scale per token: a batch mate with huge activations (here: a row of inputs
    scaled 1000x) leaves a sentence's outputs as they are alone, which one scale per batch did not."""
    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    int8 = Int8Linear(linear)
    sentence = torch.randn(1, 5, 32)
    batch = torch.cat([sentence, 1000 * torch.randn(1, 5, 32)])
    with torch.inference_mode():
        alone, together, exact = int8(sentence), int8(batch)[:1], linear(sentence)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    assert 0 < float((alone - exact).abs().max()) < 0.02 * float(exact.abs().max())


def test_the_shared_token_scales_never_serve_another_batch(tiny_model_dir: Path) -> None:
    """The layers reading one tensor (query, key, value) share its token scales; a second batch, or the same
    batch again, gets the outputs a fresh copy of the model gives it, and no batch is kept after a forward."""
    torch.manual_seed(0)
    model = BertClassifier(model_name=str(tiny_model_dir), task="single_label", label_names=["a", "b"]).eval()
    quantize_linear_layers(model)
    first, second = (
        {"input_ids": torch.randint(1000, 20000, (2, 7 + n)), "attention_mask": torch.ones(2, 7 + n, dtype=torch.long)}
        for n in range(2)
    )
    with torch.inference_mode():
        second_alone = model(second)
        model(first)
        torch.testing.assert_close(model(second), second_alone, rtol=0, atol=0)
    memos = {id(module.token_scales) for module in model.modules() if isinstance(module, Int8Linear)}
    assert len(memos) == 1
    assert next(m for m in model.modules() if isinstance(m, Int8Linear)).token_scales._inputs is None


@pytest.mark.parametrize("bits", [8, 7])
def test_weights_get_a_scale_per_output_row(bits: int) -> None:
    """The largest weight of every row is quantized to the top of the range (7 bits: 63, so that AVX2's int16
    pair sums of 255 x 63 cannot saturate), however different the rows' magnitudes."""
    linear = nn.Linear(8, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(3, 8) * torch.tensor([[0.01], [1.0], [100.0]]))
    weights = Int8Linear(linear, weight_bits=bits).weight().int_repr()
    assert weights.abs().amax(dim=1).tolist() == [2 ** (bits - 1) - 1] * 3


def test_seven_bit_weights_give_the_same_outputs_without_vnni(tmp_path: Path) -> None:
    """The 7-bit weights chosen where fbgemm has no VNNI give, with fbgemm capped at AVX2, the outputs they give
    with this CPU's kernels (no int16 saturation): two processes, one with FBGEMM_ENABLE_INSTRUCTIONS=AVX2."""
    script = (
        "import sys, torch\n"
        "from torch import nn\n"
        "from bertcls.inference.quantization import Int8Linear\n"
        "torch.manual_seed(0)\n"
        "linear = nn.Linear(384, 64)\n"
        "inputs = torch.randn(4, 9, 384).abs() * 3\n"  # non-negative, large: the worst case for pair sums
        "with torch.inference_mode():\n"
        "    torch.save(Int8Linear(linear, weight_bits=7)(inputs), sys.argv[1])\n"
    )
    outputs = []
    for name, cap in (("native", {}), ("avx2", {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"})):
        path = tmp_path / f"{name}.pt"
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=os.environ | cap)
        outputs.append(torch.load(path))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)


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


def test_the_token_scaled_copy_quantized_for_onnx_equals_the_model_in_fp32() -> None:
    """``export --quantize int8`` quantizes a copy whose linear layers divide each token by its largest magnitude
    and multiply back: the same outputs in fp32, outlier rows included."""
    from bertcls.export.onnx_int8 import TokenScaledLinear

    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    inputs = torch.cat([torch.randn(1, 5, 32), 1000 * torch.randn(1, 5, 32)])
    with torch.inference_mode():
        torch.testing.assert_close(TokenScaledLinear(linear)(inputs), linear(inputs), rtol=1e-5, atol=1e-3)
