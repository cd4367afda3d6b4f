"""Load a BERT-family encoder from the hub, a local folder, or a saved config (checkpoint restore)."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoModel, PreTrainedModel

from bertcls.errors import InputError, custom_code_refused
from bertcls.paths import resolve_location


def load_encoder(
    model_name: str, config: dict[str, Any] | None, keep_pooler: bool, gradient_checkpointing: bool = False
) -> PreTrainedModel:
    """Pretrained weights from ``model_name``, or, given ``config``, the bare architecture.

    The checkpoint path passes ``config`` because its own weights replace the pretrained ones right
    after, so downloading or reading them would be wasted work. The pooler is dropped unless the head
    uses it: unused parameters would make DDP fail or slow down. ``gradient_checkpointing`` recomputes each
    layer's activations in the backward pass instead of keeping them (see :func:`enable_checkpointing`).
    """
    if config is not None:
        encoder_config = AutoConfig.for_model(**config)
        encoder = AutoModel.from_config(encoder_config)
    else:
        try:  # trust_remote_code False: refuse a folder's own code outright (None would prompt on a terminal)
            encoder = AutoModel.from_pretrained(resolve_location(model_name), trust_remote_code=False)
        except OSError as error:  # not a folder, not on the hub, or offline without a cached copy
            raise InputError(f"model.model_name '{model_name}': {error}") from error
        except ValueError as error:
            if "trust_remote_code" not in str(error):
                raise
            raise custom_code_refused("model.model_name", model_name) from error
    if not keep_pooler and getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    if gradient_checkpointing:
        enable_checkpointing(encoder)
    return encoder.train()  # from_pretrained returns eval mode (dropout off); Lightning keeps modes as found


def enable_checkpointing(encoder: PreTrainedModel) -> None:
    """Activation (gradient) checkpointing of every layer, non-reentrant: same loss and gradients, less memory.

    Each layer's forward runs again in the backward pass (about a third more compute per step), with the
    random-number state restored so dropout draws the same masks. Non-reentrant is the form PyTorch
    recommends; unlike the reentrant one it needs no ``static_graph`` under DDP. transformers 5 names the
    method ``activation_checkpointing_enable`` (``gradient_checkpointing_enable`` is its deprecated alias);
    4.x has only the old name.
    """
    if not encoder.supports_gradient_checkpointing:
        raise InputError(f"model.gradient_checkpointing: {type(encoder).__name__} does not support it.")
    kwargs = {"use_reentrant": False}
    if hasattr(encoder, "activation_checkpointing_enable"):
        encoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def is_checkpointing(encoder: PreTrainedModel) -> bool:
    """Whether activation checkpointing is on (either transformers' name for the flag)."""
    flag = getattr(type(encoder), "is_activation_checkpointing", None)
    return bool(encoder.is_activation_checkpointing if flag is not None else encoder.is_gradient_checkpointing)


def serializable_config(encoder: PreTrainedModel) -> dict[str, Any]:
    """The encoder's config as plain Python values (safe for ``torch.load(weights_only=True)``)."""
    import json

    return json.loads(encoder.config.to_json_string(use_diff=False))
