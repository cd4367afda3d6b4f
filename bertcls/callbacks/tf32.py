"""TensorFloat-32 matrix multiplications for full-precision (``32-true``) runs on CUDA GPUs."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.utilities import rank_zero_info


class TF32Matmul(L.Callback):
    """Let fp32 matrix multiplications use TF32 tensor cores on CUDA when the run's precision is ``32-true``.

    PyTorch keeps fp32 matmuls at full precision by default; on Ampere and newer GPUs TF32 (10-bit mantissa
    inputs, fp32 accumulation) makes them several times faster, well within the noise of fine-tuning.
    Mixed-precision runs (``bf16-mixed``, ``16-mixed``) multiply in half precision already and are left alone,
    as are CPU runs. The process-wide setting is put back at the end, for whatever runs next in the process.
    """

    def __init__(self, precision: str = "high") -> None:
        self.precision = precision  # torch.set_float32_matmul_precision's "high": TF32
        self._previous: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not wants_tf32(trainer) or self._previous is not None:
            return
        self._previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(self.precision)
        rank_zero_info(f"32-true on CUDA: fp32 matmuls with TF32 (float32_matmul_precision '{self.precision}').")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            torch.set_float32_matmul_precision(self._previous)
            self._previous = None


def wants_tf32(trainer: L.Trainer) -> bool:
    """Whether the run multiplies in fp32 (``32-true``) on a CUDA GPU."""
    return isinstance(trainer.accelerator, CUDAAccelerator) and str(trainer.precision) == "32-true"
