"""``bertcls convert``: a training checkpoint to one plain checkpoint file and/or a Hugging Face model folder.

The input is a checkpoint of ``bertcls fit``: a plain ``.ckpt`` file, or the folder that Lightning's
``DeepSpeedStrategy`` writes in its place (``last.ckpt/`` holding ``latest`` and ``checkpoint/*_states.pt``,
with the model and optimizer sharded by ZeRO across the ranks).

``--to FILE.ckpt`` writes one plain Lightning checkpoint with fp32 weights and everything else a checkpoint
of bertcls carries (hyperparameters with the encoder's architecture and the label names, the bundled
tokenizer, the loop state): ``bertcls test / validate / predict --ckpt_path FILE.ckpt`` and
``BertClassifier.load_from_checkpoint`` use it without DeepSpeed. It holds no optimizer state, so it does not
resume training: resume from the DeepSpeed folder itself.

``--hf-folder DIR`` writes the encoder as a Hugging Face model (``config.json`` with ``id2label`` /
``label2id``, ``model.safetensors``), the tokenizer, the task head's weights in ``head.safetensors`` and a
README: ``AutoModel.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)`` load them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from bertcls.checkpoint_io import atomic_torch_save
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
HEAD_FILE = "head.safetensors"
DEEPSPEED_EXTRA = "pip install 'bertcls[deepspeed]'"


def main(argv: list[str]) -> None:
    try:
        convert(argv)
    except InputError as error:  # bad input: one message that names the path and the fix
        raise SystemExit(f"bertcls: error: {error}") from error


def option_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertcls convert",
        description="Turn a checkpoint of `bertcls fit` (a .ckpt file, or the .ckpt folder of a DeepSpeed run) into "
        "one plain checkpoint file (--to) and/or a Hugging Face model folder (--hf-folder).",
    )
    parser.add_argument("checkpoint", type=Path, help="a .ckpt file, or a DeepSpeed checkpoint folder (*.ckpt/)")
    parser.add_argument(
        "--to", type=Path, metavar="FILE.ckpt", help="write one plain Lightning checkpoint here (fp32 weights)"
    )
    parser.add_argument(
        "--hf-folder",
        type=Path,
        metavar="DIR",
        help="write the encoder, tokenizer and head as a Hugging Face model folder here",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --to file or --hf-folder")
    return parser


def convert(argv: list[str]) -> dict[str, Any]:
    """Run the command; return the plain checkpoint it built."""
    parser = option_parser()
    options = parser.parse_args(argv)
    if options.to is None and options.hf_folder is None:
        parser.error("give --to FILE.ckpt, --hf-folder DIR, or both")
    check_output(options.to, options.overwrite, "--to")
    check_output(options.hf_folder, options.overwrite, "--hf-folder")
    checkpoint = load_checkpoint(options.checkpoint)
    if options.to is not None:
        atomic_torch_save(checkpoint, options.to)
        print(f"plain checkpoint: {options.to}")
    if options.hf_folder is not None:
        write_hf_folder(checkpoint, options.hf_folder, source=options.checkpoint)
        print(f"Hugging Face folder: {options.hf_folder}")
    return checkpoint


def check_output(path: Path | None, overwrite: bool, option: str) -> None:
    if path is None or not path.exists() or overwrite:
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    raise InputError(f"{option} {path} already exists. Choose another path, or add --overwrite to replace it.")


# --- reading ------------------------------------------------------------------------------------
def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint as one plain dict: fp32 ``state_dict``, no optimizer state, nothing of DeepSpeed's."""
    if not path.exists():
        raise InputError(
            f"{path} does not exist. Give a checkpoint of `bertcls fit`: a .ckpt file, or the .ckpt folder of a "
            "DeepSpeed run (checkpoints/<experiment>/<version>/checkpoints/last.ckpt)."
        )
    checkpoint = load_deepspeed_folder(path) if path.is_dir() else load_file(path)
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


def load_file(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, truncated, or unpickling refused
        raise InputError(f"{path} could not be read as a PyTorch checkpoint: {error}") from error
    if not isinstance(checkpoint, dict):
        raise InputError(f"{path} holds a {type(checkpoint).__name__}, not a Lightning checkpoint.")
    return checkpoint


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


# --- the Hugging Face folder ----------------------------------------------------------------------
def write_hf_folder(checkpoint: dict[str, Any], folder: Path, source: Path) -> None:
    from safetensors.torch import save_file

    from bertcls.model.encoder import load_encoder

    hparams = checkpoint["hyper_parameters"]
    state = checkpoint["state_dict"]
    label_names = list(hparams.get("label_names") or [])
    pooling = hparams.get("pooling", "cls")
    # The architecture of the training run (pooler dropped unless the head used it), then its weights.
    encoder = load_encoder(hparams["model_name"], hparams["encoder_config"], keep_pooler=pooling == "pooler")
    prefix = "encoder."
    encoder_state = {name.removeprefix(prefix): tensor for name, tensor in state.items() if name.startswith(prefix)}
    try:
        encoder.load_state_dict(encoder_state, strict=True)
    except RuntimeError as error:
        raise InputError(f"{source}: the encoder's weights do not fit its saved architecture: {error}") from error
    if label_names:
        encoder.config.id2label = dict(enumerate(label_names))
        encoder.config.label2id = {name: index for index, name in enumerate(label_names)}
    if folder.exists():
        shutil.rmtree(folder)  # check_output allowed it: empty, or --overwrite
    folder.mkdir(parents=True)
    encoder.eval().save_pretrained(folder, safe_serialization=True)
    write_tokenizer(checkpoint, hparams, folder, source)
    head = {name[len("head.") :]: tensor.contiguous() for name, tensor in state.items() if name.startswith("head.")}
    metadata = {
        "format": "bertcls-head",
        "task": str(hparams.get("task")),
        "pooling": str(pooling),
        "label_names": json.dumps(label_names),
    }
    save_file(head, folder / HEAD_FILE, metadata=metadata)
    (folder / "README.md").write_text(readme(source, hparams, label_names, sorted(head)), encoding="utf-8")


def write_tokenizer(checkpoint: dict[str, Any], hparams: dict[str, Any], folder: Path, source: Path) -> None:
    files: dict[str, str] | None = checkpoint.get(TOKENIZER_CHECKPOINT_KEY)
    if files:
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        return
    # Checkpoints written before tokenizers were bundled: the tokenizer of the model the run started from.
    from transformers import AutoTokenizer

    from bertcls.paths import resolve_location

    try:
        AutoTokenizer.from_pretrained(resolve_location(hparams["model_name"])).save_pretrained(folder)
    except OSError as error:
        raise InputError(
            f"{source} carries no tokenizer, and that of its model '{hparams['model_name']}' could not be loaded "
            f"({error}). Run where that model is available (hub access, or its folder at that path)."
        ) from error


def readme(source: Path, hparams: dict[str, Any], label_names: list[str], head_tensors: list[str]) -> str:
    pooling = hparams.get("pooling", "cls")
    pooler = (
        "The head used BERT's pooler, which is saved with the encoder (`pooler_output`)."
        if pooling == "pooler"
        else "The run trained no pooler (pooling `" + str(pooling) + "`), so none is saved: `AutoModel` adds a "
        "freshly initialised one (and warns so), whose `pooler_output` means nothing. Use `last_hidden_state`."
    )
    return f"""# bertcls encoder

Converted by `bertcls convert` from `{source}` (started from `{hparams["model_name"]}`, task
`{hparams.get("task")}`, pooling `{pooling}`).

- `config.json`, `model.safetensors`: the fine-tuned encoder: `AutoModel.from_pretrained(this_folder)`.
  `id2label` / `label2id` hold the {len(label_names)} labels in the head's order. {pooler}
- tokenizer files: `AutoTokenizer.from_pretrained(this_folder)`.
- `{HEAD_FILE}`: the task head's tensors ({", ".join(head_tensors)}); its metadata names the task, the pooling
  and the labels.

A full task model (`AutoModelForSequenceClassification` with the head inside) will be written by
`bertcls export`; that command does not exist yet.
"""
