"""Which precision levers pay off on this CPU: bf16 autocast (``--trainer.precision bf16-mixed``) and int8
(``--model.quantize int8``), from the CPU's flags and the kernel restrictions set in the environment.

- bf16 is fast only with bf16 units: AVX-512 BF16 (``avx512_bf16``) or AMX (``amx_bf16``), reached through
  oneDNN. Without them bf16 is emulated and slower than fp32 (0.15x for ``bertcls predict`` on an AVX2-only
  EPYC), and so it is where ``ONEDNN_MAX_CPU_ISA`` keeps oneDNN below them.
- int8 (fbgemm's kernels) needs AVX2 at least; VNNI (``avx512_vnni``, ``avx_vnni``) multiplies int8 in one
  instruction instead of three, unless ``FBGEMM_ENABLE_INSTRUCTIONS`` caps fbgemm at ``AVX2`` or ``AVX512``.

ONNX Runtime picks its kernels from the CPU alone (no environment setting restricts them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
# Settings of the environment that restrict the kernels (and what they restrict).
RESTRICTIONS = {
    "ATEN_CPU_CAPABILITY": "PyTorch's own kernels",
    "ONEDNN_MAX_CPU_ISA": "oneDNN (fp32 and bf16 matrix products)",
    "FBGEMM_ENABLE_INSTRUCTIONS": "fbgemm (int8 linear layers)",
}
# What an AVX2-only CPU (AMD EPYC before Zen 4) leaves PyTorch, for measuring one on a newer CPU
# (bench/inference.py --avx2). Read when torch starts: set them before it is imported.
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
# ONEDNN_MAX_CPU_ISA values that leave oneDNN its bf16 kernels (oneDNN's names; ALL is no cap).
_ONEDNN_BF16 = ("ALL", "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_AMX", "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16")
_FBGEMM_WITHOUT_VNNI = ("AVX2", "AVX512", "AVX512_256")


@dataclass(frozen=True)
class CpuLevers:
    flags: frozenset[str]  # of /proc/cpuinfo
    restrictions: dict[str, str]  # the RESTRICTIONS set in the environment: name -> value

    @property
    def bf16_units(self) -> bool:
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def bf16_fast(self) -> bool:
        """Whether bf16 autocast can beat fp32: bf16 units that oneDNN is allowed to use."""
        cap = self.restrictions.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
        return self.bf16_units and cap in _ONEDNN_BF16

    @property
    def int8_vnni(self) -> bool:
        cap = self.restrictions.get("FBGEMM_ENABLE_INSTRUCTIONS", "").upper()
        return any(flag in self.flags for flag in VNNI_FLAGS) and cap not in _FBGEMM_WITHOUT_VNNI

    @property
    def int8(self) -> bool:
        return "avx2" in self.flags

    def describe(self) -> str:
        """One line per lever and one for the restrictions, e.g. for the top of a benchmark's output."""
        units = [flag for flag in BF16_FLAGS if flag in self.flags]
        if self.bf16_fast:
            bf16 = f"bf16: fast ({', '.join(units)}): --trainer.precision bf16-mixed"
        elif units:
            bf16 = f"bf16: units ({', '.join(units)}) but ONEDNN_MAX_CPU_ISA keeps oneDNN below them: slower than fp32"
        else:
            bf16 = "bf16: no bf16 units (avx512_bf16, amx_bf16): slower than fp32 here, not recommended"
        if not self.int8:
            int8 = "int8: no AVX2: fbgemm's int8 kernels cannot run"
        elif self.int8_vnni:
            int8 = "int8: VNNI (one-instruction int8 products): --model.quantize int8"
        else:
            int8 = "int8: AVX2 without VNNI (or capped below it): --model.quantize int8"
        restricted = ", ".join(f"{name}={value} ({RESTRICTIONS[name]})" for name, value in self.restrictions.items())
        if restricted:
            restricted += "; ONNX Runtime ignores them"
        return f"CPU levers: {bf16}; {int8}. Kernel restrictions: {restricted or 'none'}."


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of the first processor of a ``/proc/cpuinfo`` text (``flags`` on x86; empty elsewhere)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_levers(cpuinfo: Path = Path("/proc/cpuinfo"), environ: dict[str, str] | None = None) -> CpuLevers:
    """This machine's levers (no ``/proc/cpuinfo``, e.g. macOS: no flags known, so no lever is claimed)."""
    environ = os.environ if environ is None else environ
    text = cpuinfo.read_text(encoding="utf-8", errors="replace") if cpuinfo.is_file() else ""
    restrictions = {name: environ[name] for name in RESTRICTIONS if environ.get(name)}
    return CpuLevers(cpu_flags(text), restrictions)
