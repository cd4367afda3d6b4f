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
import json
import shutil
from pathlib import Path
from typing import Any

from bertcls.checkpoint_io import atomic_torch_save
from bertcls.errors import InputError, reported_as_exit
from bertcls.export.checkpoint import check_output, load_checkpoint, write_tokenizer

HEAD_FILE = "head.safetensors"


def main(argv: list[str]) -> None:
    with reported_as_exit():  # bad input: one message that names the path and the fix
        convert(argv)


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

For a task model that `transformers.pipeline` and `AutoModelFor...Classification` load as it is, use
`bertcls export` (docs/export.md).
"""
