"""int8 inference on the CPU (``--model.quantize int8``): the linear layers quantized once the weights are in."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from bertcls.errors import InputError
from bertcls.inference.quantization import is_quantized, quantize_linear_layers


class Int8Inference(L.Callback):
    """Quantize the model's ``nn.Linear`` layers to int8 (``bertcls.inference.quantization``) when predicting,
    testing or validating, after Lightning has restored the checkpoint's weights; refuse training, GPUs, and
    mixed precision (int8 kernels are CPU-only, and autocast over them is not measured). The model adds it
    (``BertClassifier.configure_callbacks``) when ``model.quantize`` is ``int8``."""

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            raise InputError(
                "model.quantize: int8 is for inference (predict, test, validate): int8 layers cannot be trained. "
                "Train without it, then predict with --model.quantize int8."
            )
        if not isinstance(trainer.accelerator, CPUAccelerator):
            raise InputError(
                f"model.quantize: int8 runs on the CPU only (PyTorch's int8 kernels are fbgemm's, CPU-only), and this "
                f"run uses {type(trainer.accelerator).__name__}. Add --trainer.accelerator cpu, or on a GPU leave "
                "model.quantize out and use --trainer.precision bf16-mixed."
            )
        if str(trainer.precision) != "32-true":
            raise InputError(
                f"model.quantize: int8 needs --trainer.precision 32-true, not {trainer.precision}: the int8 layers "
                "choose their own precision. Give one lever: int8, or bf16-mixed (see docs/inference.md, Speed)."
            )

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._quantize(pl_module)

    @override
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._quantize(pl_module)

    @override
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._quantize(pl_module)

    def _quantize(self, pl_module: L.LightningModule) -> None:
        if not is_quantized(pl_module):
            count = quantize_linear_layers(pl_module)
            rank_zero_info(
                f"model.quantize int8: {count} linear layers quantized to int8 (weights per row, inputs per token)."
            )
