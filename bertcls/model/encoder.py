"""Load a BERT-family encoder from the hub, a local folder, or a saved config (checkpoint restore)."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoModel, PreTrainedModel

from bertcls.errors import InputError
from bertcls.paths import resolve_location


def load_encoder(model_name: str, config: dict[str, Any] | None, keep_pooler: bool) -> PreTrainedModel:
    """Pretrained weights from ``model_name``, or, given ``config``, the bare architecture.

    The checkpoint path passes ``config`` because its own weights replace the pretrained ones right
    after, so downloading or reading them would be wasted work. The pooler is dropped unless the head
    uses it: unused parameters would make DDP fail or slow down.
    """
    if config is not None:
        encoder_config = AutoConfig.for_model(**config)
        encoder = AutoModel.from_config(encoder_config)
    else:
        try:
            encoder = AutoModel.from_pretrained(resolve_location(model_name))
        except OSError as error:  # not a folder, not on the hub, or offline without a cached copy
            raise InputError(f"model.model_name '{model_name}': {error}") from error
    if not keep_pooler and getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder.train()  # from_pretrained returns eval mode (dropout off); Lightning keeps modes as found


def serializable_config(encoder: PreTrainedModel) -> dict[str, Any]:
    """The encoder's config as plain Python values (safe for ``torch.load(weights_only=True)``)."""
    import json

    return json.loads(encoder.config.to_json_string(use_diff=False))
