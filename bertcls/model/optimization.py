"""AdamW parameter groups (no decay on biases and norms, layer-wise learning-rate decay) and schedule."""

from __future__ import annotations

import re

from torch import nn

LAYER_INDEX = re.compile(r"\.layer\.(\d+)\.")


def layer_depth(parameter_name: str, num_layers: int) -> int:
    """0 for embeddings, i + 1 for transformer layer i, ``num_layers + 1`` for everything above."""
    if ".embeddings." in f".{parameter_name}":
        return 0
    match = LAYER_INDEX.search(parameter_name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def parameter_groups(
    model: nn.Module, num_layers: int, learning_rate: float, weight_decay: float, layerwise_lr_decay: float
) -> list[dict]:
    """Group trainable parameters by (depth, decays); depth d trains at lr * decay ** (top - d).

    Biases and LayerNorm weights (all 1-D parameters) get no weight decay.
    """
    top = num_layers + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth = layer_depth(name, num_layers)
        decays = parameter.ndim >= 2
        group = groups.setdefault(
            (depth, decays),
            {
                "params": [],
                "lr": learning_rate * layerwise_lr_decay ** (top - depth),
                "weight_decay": weight_decay if decays else 0.0,
            },
        )
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]
