"""Strategies that run the GPU code paths on a CPU: for tests and ``bench/gpu_acceptance.py --dry-run``.

Nothing here is meant for real training: they exist so that DeepSpeed's engine and a strategy that restores the
checkpoint after ``setup`` (as DeepSpeed and FSDP do) can be exercised on a machine without a GPU.
"""

from __future__ import annotations

import torch
from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy

from bertcls.deepspeed_strategy import DeepSpeedStrategy


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    """bertcls's ``DeepSpeedStrategy`` on a CPU (DeepSpeed's CPU accelerator, gloo).

    Lightning refuses any accelerator but CUDA, and hands DeepSpeed the root device's index, which a CPU device
    lacks. Nothing else changes: training steps, ZeRO partitioning and checkpoint writing are the real ones.
    Set ``DS_ACCELERATOR=cpu`` where a GPU driver is visible.
    """

    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # DeepSpeedStrategy's own only adds the CUDA check

    def setup_distributed(self) -> None:
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()  # without Lightning's check of CUDA device indices

    @property
    def root_device(self) -> torch.device:
        return torch.device("cpu", self.local_rank)


class RestoreAfterSetupDDPStrategy(DDPStrategy):
    """DDP that, like DeepSpeed and FSDP, restores a checkpoint only after ``setup`` (and so after
    ``configure_optimizers``, which builds the training loader through ``estimated_stepping_batches``)."""

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        return True
