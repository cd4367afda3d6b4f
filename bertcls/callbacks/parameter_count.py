"""The model's size in one line at the start of ``fit``, in place of Lightning's model summary table."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from typing_extensions import override


class ParameterCount(ModelSummary):
    """Say the parameters of each top-level part and how many train, e.g.
    ``model: encoder BertModel 22.6 M, head SingleLabelHead 770; 22.6 M parameters, all trainable``.

    A ``ModelSummary`` so that Lightning adds no table of its own (its FLOPs column reads 0 on every model here,
    and the evaluators, with no parameters, take rows of their own). Under ZeRO-3 the counts are DeepSpeed's.
    """

    def __init__(self) -> None:
        super().__init__(max_depth=1)

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = self._summary(trainer, pl_module)
        parts = [
            f"{name} {kind} {readable(count)}"
            for name, kind, count in zip(summary.layer_names, summary.layer_types, summary.param_nums, strict=True)
            if count
        ]
        total, trainable = summary.total_parameters, summary.trainable_parameters
        trains = "all trainable" if trainable == total else f"{readable(trainable)} trainable"
        rank_zero_info(f"model: {', '.join(parts)}; {readable(total)} parameters, {trains}")


def readable(count: int) -> str:
    """``22.6 M``, ``770``: Lightning's count without the padding it adds for its table's column."""
    return get_human_readable_count(count).strip()
