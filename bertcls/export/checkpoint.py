"""Reading a checkpoint of ``bertcls fit`` for export: a plain ``.ckpt`` file or a DeepSpeed ``.ckpt`` folder."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

from bertcls.checkpoint_io import read_checkpoint
from bertcls.errors import InputError
from bertcls.model.bundled_tokenizer import TOKENIZER_CHECKPOINT_KEY

# Left out of the plain checkpoint: the optimizer state (a ZeRO run's is sharded, and it would only make the
# file three times larger), and what DeepSpeed's engine adds to its model-states file (Lightning's converter
# keeps those).
DROPPED_KEYS = (
    "optimizer_states",
    "buffer_names",
    "param_shapes",
    "frozen_param_shapes",
    "shared_params",
    "frozen_param_fragments",
    "data_sampler",
    "random_ltd",
    "global_samples",
    "checkpoint_parallel_dimensions",
    "ds_config",
    "ds_version",
)
DEEPSPEED_EXTRA = "pip install 'bertcls[deepspeed]'"


def check_output(path: Path | None, overwrite: bool, option: str) -> None:
    if path is None or not path.exists() or overwrite:
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    raise InputError(f"{option} {path} already exists. Choose another path, or add --overwrite to replace it.")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint as one plain dict: fp32 ``state_dict``, no optimizer state, nothing of DeepSpeed's."""
    if not path.exists():
        raise InputError(
            f"{path} does not exist. Give a checkpoint of `bertcls fit`: a .ckpt file, or the .ckpt folder of a "
            "DeepSpeed run (checkpoints/<experiment>/<version>/checkpoints/last.ckpt)."
        )
    checkpoint = load_deepspeed_folder(path) if path.is_dir() else read_checkpoint(path)
    if not isinstance(checkpoint.get("state_dict"), dict) or "encoder_config" not in checkpoint.get(
        "hyper_parameters", {}
    ):
        raise InputError(
            f"{path} is not a checkpoint of `bertcls fit` (it has no state_dict or no hyper_parameters.encoder_config)."
        )
    cleaned = {key: value for key, value in checkpoint.items() if key not in DROPPED_KEYS}
    cleaned["state_dict"] = {
        name: tensor.float() if tensor.is_floating_point() else tensor
        for name, tensor in checkpoint["state_dict"].items()
    }
    return cleaned


def deepspeed_folder(path: Path) -> Path | None:
    """The DeepSpeed checkpoint folder that ``path`` is (or whose tag subfolder it is), or None.

    Such a folder has a ``latest`` file naming a subfolder (Lightning's tag: ``checkpoint``) that holds
    ``*model_states.pt`` files.
    """
    for folder in (path, path.parent):
        latest = folder / "latest"
        if not latest.is_file():
            continue
        tag = latest.read_text().strip()
        if (folder == path or path.name == tag) and any((folder / tag).glob("*model_states.pt")):
            return folder
    return None


def load_deepspeed_folder(path: Path) -> dict[str, Any]:
    folder = deepspeed_folder(path)
    if folder is None:
        hint = (
            " It looks like an FSDP sharded checkpoint: make one file of it with "
            f"`python -m lightning.pytorch.utilities.consolidate_checkpoint {path}`."
            if (path / ".metadata").is_file() or (path / "meta.pt").is_file()
            else ""
        )
        raise InputError(
            f"{path} is a folder but not a DeepSpeed checkpoint: it has no 'latest' file naming a subfolder with "
            f"*model_states.pt files.{hint} Give a .ckpt file, or the .ckpt "
            "folder that a DeepSpeed run wrote (checkpoints/<experiment>/<version>/checkpoints/last.ckpt)."
        )
    if importlib.util.find_spec("deepspeed") is None:
        raise InputError(
            f"{path} is a DeepSpeed checkpoint, and gathering its shards needs DeepSpeed, which is not installed: "
            f"{DEEPSPEED_EXTRA}"
        )
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    with tempfile.TemporaryDirectory(prefix="bertcls-convert-") as scratch:
        # Lightning's converter writes its result to a file too; only the returned dict is used.
        return convert_zero_checkpoint_to_fp32_state_dict(folder, Path(scratch) / "fp32.ckpt")


def write_tokenizer(
    checkpoint: dict[str, Any], hparams: dict[str, Any], folder: Path, source: Path, trust_remote_code: bool = False
) -> None:
    files: dict[str, str] | None = checkpoint.get(TOKENIZER_CHECKPOINT_KEY)
    if files:
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        return
    # Checkpoints written before tokenizers were bundled: the tokenizer of the model the run started from.
    from bertcls.remote_code import load_tokenizer

    try:
        load_tokenizer(hparams["model_name"], "model.model_name", trust_remote_code).save_pretrained(folder)
    except OSError as error:
        raise InputError(
            f"{source} carries no tokenizer, and that of its model '{hparams['model_name']}' could not be loaded "
            f"({error}). Run where that model is available (hub access, or its folder at that path)."
        ) from error
