"""AdamW parameter groups (no decay on biases and norms, layer-wise learning-rate decay) and schedule."""

from __future__ import annotations

import re

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import nn

LAYER_INDEX = re.compile(r"\.layer\.(\d+)\.")


def layer_depth(parameter_name: str, num_layers: int) -> int:
    """0 for embeddings, i + 1 for transformer layer i, ``num_layers + 1`` for everything above."""
    if ".embeddings." in f".{parameter_name}":
        return 0
    match = LAYER_INDEX.search(parameter_name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def no_decay_parameters(model: nn.Module) -> set[int]:
    """``id``s of the biases and of the normalisation layers' parameters (LayerNorm, RMSNorm, ...).

    Found by module type and name, not by shape: FSDP (``use_orig_params``) shows every parameter of a
    sharded model as a flat 1-D view when ``configure_optimizers`` runs, so "1-D" would mean "all of them".
    """
    ids = set()
    for module in model.modules():
        is_norm = "norm" in type(module).__name__.lower()
        for name, parameter in module.named_parameters(recurse=False):
            if is_norm or name.endswith("bias"):
                ids.add(id(parameter))
    return ids


def parameter_groups(
    model: nn.Module, num_layers: int, learning_rate: float, weight_decay: float, layerwise_lr_decay: float
) -> list[dict]:
    """Group trainable parameters by (depth, decays); depth d trains at lr * decay ** (top - d).

    Biases and normalisation-layer weights get no weight decay (see ``no_decay_parameters``). Without
    layer-wise decay there is one depth. Each group is named (``layer3``, ``head-no_decay``, ...), which is
    how ``LearningRateMonitor`` labels its curves.
    """
    top = num_layers + 1
    no_decay = no_decay_parameters(model)
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth = layer_depth(name, num_layers) if layerwise_lr_decay != 1.0 else top
        decays = id(parameter) not in no_decay
        group = groups.setdefault(
            (depth, decays),
            {
                "params": [],
                "lr": learning_rate * layerwise_lr_decay ** (top - depth),
                "weight_decay": weight_decay if decays else 0.0,
                "name": group_name(depth, top, layerwise_lr_decay != 1.0) + ("" if decays else "-no_decay"),
            },
        )
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]


def group_name(depth: int, top: int, by_layer: bool) -> str:
    if not by_layer:
        return "all"
    if depth == 0:
        return "embeddings"
    return "head" if depth == top else f"layer{depth - 1}"


def total_optimizer_steps(trainer: L.Trainer) -> int:
    """Optimizer steps of the whole fit, as the learning-rate scheduler will be stepped: the schedule's length.

    ``Trainer.estimated_stepping_batches``: ``ceil(batches / accumulate_grad_batches)`` steps per epoch (Lightning's
    loop closes an epoch's last, partial accumulation with a step, under bertcls's DeepSpeed strategy too), with
    ``limit_train_batches``, ``max_steps`` and the per-rank batches under DDP taken into account.
    """
    return int(trainer.estimated_stepping_batches)  # also loads the training data, for num_training_batches


def offloads_optimizer(strategy: object) -> bool:
    """Whether a DeepSpeed strategy keeps the optimizer states in CPU memory (or on NVMe): ZeRO-Offload."""
    if not isinstance(strategy, DeepSpeedStrategy) or not isinstance(strategy.config, dict):
        return False
    offload = (strategy.config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    return offload.get("device", "none") != "none"


def adamw(groups: list[dict], learning_rate: float, eps: float, strategy: object) -> torch.optim.Optimizer:
    """AdamW (with bias correction) over ``groups``: torch's fused kernel, or DeepSpeed's under ZeRO-Offload.

    DeepSpeed refuses to offload any optimizer but its own CPU Adam (compiled on first use: a minute or two,
    then cached in ~/.cache/torch_extensions). Both apply the decay of each group, decoupled (AdamW).
    """
    if offloads_optimizer(strategy):
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=learning_rate, eps=eps, adamw_mode=True, bias_correction=True)
    # The fused kernel (CPU and CUDA) steps all parameters at once: about 7x faster than foreach on a CPU. It
    # unscales fp16 gradients inside its step, too late for clipping, so with a gradient scaler (16-mixed)
    # Lightning refuses it: then foreach, and Lightning unscales before clipping.
    fused = getattr(strategy.precision_plugin, "scaler", None) is None
    return torch.optim.AdamW(groups, lr=learning_rate, eps=eps, fused=fused)


def clip_gradients(
    module: nn.Module,
    strategy: object,
    clip_val: float | None,
    algorithm: object,
    total_norm: torch.Tensor | None = None,
) -> bool:
    """Clip the gradients of ``module`` where bertcls does it better than Lightning; True if it did (otherwise
    Lightning clips, as usual).

    - By norm, outside DeepSpeed and FSDP: with ``total_norm`` when the step already computed it for logging
      (``gradient_norm``), so the norm of every gradient is taken once, not twice. Under 16-mixed the gradients
      are unscaled by then (Lightning unscales before ``on_before_optimizer_step``).
    - Mixed precision without a gradient scaler (bf16-mixed) and the fused AdamW, by value: Lightning refuses to
      clip for any optimizer that can unscale gradients itself, because under fp16 they would still be scaled.
      bf16 has no scaler, so its gradients are the true ones and are clipped as fp32's are.
    - FSDP, by norm: the norm must cover every rank's shards, which only the root FSDP module's
      ``clip_grad_norm_`` computes (``torch.nn.utils.clip_grad_norm_`` on shards is wrong); Lightning has no handle
      on that module in its precision plugin and raises. By value it clips each shard itself.

    DeepSpeed clips inside its engine (``gradient_clipping`` in its config, which Lightning sets).
    """
    if not clip_val or isinstance(strategy, DeepSpeedStrategy):
        return False
    by_value = algorithm == GradClipAlgorithmType.VALUE
    if isinstance(strategy, FSDPStrategy):
        if by_value:
            return False
        strategy.model.clip_grad_norm_(clip_val)  # the root FullyShardedDataParallel module
        return True
    if by_value:
        precision = getattr(strategy, "precision_plugin", None)
        if not isinstance(precision, MixedPrecision) or precision.scaler is not None:
            return False
        torch.nn.utils.clip_grad_value_(module.parameters(), clip_val)
        return True
    parameters = [parameter for parameter in module.parameters() if parameter.grad is not None]
    if total_norm is None:
        total_norm = torch.nn.utils.get_total_norm([parameter.grad for parameter in parameters])
    torch.nn.utils.clip_grads_with_norm_(parameters, clip_val, total_norm)  # scales the parameters' .grad
    return True


def gradient_norm(module: nn.Module, strategy: object) -> torch.Tensor | None:
    """The L2 norm of all gradients together, before clipping; None under DeepSpeed, which keeps them itself
    (its engine reports the norm after the step: ``deepspeed_engine.get_global_grad_norm()``).

    One multi-tensor kernel per device and dtype (``foreach``), not one per parameter (about 800 launches for
    BERT-large). Under FSDP every rank holds a shard of each gradient, so the squares are summed over ranks.
    """
    if isinstance(strategy, DeepSpeedStrategy):
        return None
    gradients = [parameter.grad for parameter in module.parameters() if parameter.grad is not None]
    if not gradients:
        return None
    norm = torch.nn.utils.get_total_norm(gradients)
    if isinstance(strategy, FSDPStrategy):
        norm = strategy.reduce(norm.square(), reduce_op="sum").sqrt()
    return norm
