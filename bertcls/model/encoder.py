"""Load a BERT-family encoder from the hub, a local folder, or a saved config (checkpoint restore)."""

from __future__ import annotations

from typing import Any

from safetensors import SafetensorError
from transformers import CONFIG_MAPPING, AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from bertcls.errors import InputError, custom_code_refused
from bertcls.paths import model_location
from bertcls.remote_code import custom_code_policy


def load_encoder(
    model_name: str,
    config: dict[str, Any] | None,
    keep_pooler: bool,
    gradient_checkpointing: bool = False,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Pretrained weights from ``model_name``, or, given ``config``, the bare architecture.

    The checkpoint path passes ``config`` because its own weights replace the pretrained ones right
    after, so downloading or reading them would be wasted work. The pooler is dropped unless the head
    uses it (``keep_pooler``; an encoder without one is then refused): unused parameters would make DDP fail or
    slow down. ``gradient_checkpointing`` recomputes each
    layer's activations in the backward pass instead of keeping them (see :func:`enable_checkpointing`).

    ``trust_remote_code`` lets a model whose config has an ``auto_map`` run the Python code that comes with it
    (see ``bertcls.remote_code``); off, such a model is refused. A checkpoint of such a model is rebuilt with
    the code of its ``model_name`` folder (or hub repository) again, so it needs the option too, and that folder.
    """
    if config is not None and not uses_own_code(config, trust_remote_code):
        encoder = AutoModel.from_config(AutoConfig.for_model(**config), trust_remote_code=False)
    else:
        if config is not None and not trust_remote_code:  # refused before the folder is even looked at
            raise custom_code_refused("model.model_name", model_name)
        location = model_location(model_name, "model.model_name")
        try:
            with custom_code_policy("model.model_name", model_name, location, trust_remote_code):
                if config is None:
                    encoder = AutoModel.from_pretrained(location, trust_remote_code=trust_remote_code)
                else:
                    encoder = AutoModel.from_config(code_architecture(config, location), trust_remote_code=True)
        except OSError as error:  # not a folder, not on the hub, or offline without a cached copy
            raise InputError(f"model.model_name '{model_name}': {error}") from error
        except SafetensorError as error:  # a truncated or damaged weights file
            raise InputError(
                f"model.model_name '{model_name}': its weights file could not be read ({error}): it is damaged or "
                "was cut short. Download or copy the model again (bertcls download re-fetches a hub model)."
            ) from error
    has_pooler = getattr(encoder, "pooler", None) is not None
    if keep_pooler and not has_pooler:
        raise InputError(
            f"model.pooling: pooler needs an encoder with a pooler layer, and {type(encoder).__name__} "
            f"(model.model_name '{model_name}') has none. Set --model.pooling cls (the [CLS] state) or mean."
        )
    if not keep_pooler and has_pooler:
        encoder.pooler = None
    if gradient_checkpointing:
        enable_checkpointing(encoder)
    return encoder.train()  # from_pretrained returns eval mode (dropout off); Lightning keeps modes as found


# Encoders whose position ids start after the padding id (pad_token_id + 1), as transformers builds them: their
# max_position_embeddings (514 for RoBERTa) counts those unused positions.
PADDING_OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text", "mpnet", "longformer", "ibert", "xmod"}
)


def position_limit(model_name: str, config: dict[str, Any] | None) -> int | None:
    """The longest input (in word pieces) the encoder's position embeddings take, from its saved ``config`` (a
    checkpoint's) or ``model_name``'s config.json (no weights read).

    None where there is no such limit (relative positions only), or the config cannot be read yet (a hub model
    not downloaded: loading it reports why).
    """
    if config is None:
        try:
            config, _ = PretrainedConfig.get_config_dict(model_location(model_name, "model.model_name"))
        except OSError:
            return None
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or config.get("position_biased_input") is False:  # DeBERTa-v2: relative only
        return None
    if config.get("model_type") in PADDING_OFFSET_POSITIONS:
        positions -= (config.get("pad_token_id") or 1) + 1
    return positions


def uses_own_code(config: dict[str, Any], trust_remote_code: bool) -> bool:
    """Whether a saved architecture is built from the Python code that came with its model, as ``from_pretrained``
    built it: when transformers lacks its ``model_type``, and, with the option on, whenever its config has an
    ``auto_map`` (the folder's classes then replace even transformers' own, as in ``from_pretrained``)."""
    return "auto_map" in config and (trust_remote_code or config.get("model_type") not in CONFIG_MAPPING)


def code_architecture(config: dict[str, Any], location: str) -> PretrainedConfig:
    """A saved ``config`` as an instance of the config class of the code at ``location`` (which runs).

    ``from_config`` then finds the model's class in the same code, through the config's ``name_or_path``.
    """
    config_class = type(AutoConfig.from_pretrained(location, trust_remote_code=True))
    architecture = config_class.from_dict(config)
    architecture.name_or_path = location
    return architecture


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
