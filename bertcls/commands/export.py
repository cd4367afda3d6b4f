"""``bertcls export``: a checkpoint of ``bertcls fit`` as a Hugging Face model folder and/or an ONNX model.

    bertcls export checkpoints/my-run/version_0/checkpoints/best-*.ckpt --output exported/my-run
                                                     # pooling mean: a sentence-transformers folder instead
    bertcls export CKPT --output DIR --onnx          # the folder, plus DIR/model.onnx
    bertcls export CKPT --output DIR --onnx-only     # DIR/model.onnx and the tokenizer (any pooling)
    bertcls export CKPT --output DIR --onnx --quantize int8   # also DIR/model.int8.onnx (CPU inference)

The checkpoint may be a plain ``.ckpt`` file or the ``.ckpt`` folder of a DeepSpeed run. After writing, the
exported model is run beside the checkpoint's on a few sentences and the largest difference between their
logits is printed; a difference above ``MAX_DIFFERENCE`` stops the command with an error.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from bertcls.errors import InputError, reported_as_exit
from bertcls.export import st_folder
from bertcls.export.checkpoint import check_output, load_checkpoint, write_tokenizer
from bertcls.export.hf_folder import export_hf_folder
from bertcls.model.module import BertClassifier
from bertcls.remote_code import load_tokenizer

MAX_DIFFERENCE = 1e-3
SENTENCES = [
    "A gripping, beautifully acted film.",
    "The plot is thin and the jokes fall flat, but the music is lovely.",
    "Paris is the capital of France.",
    "I would not watch it again.",
]


def main(argv: list[str]) -> None:
    with reported_as_exit():
        export(argv)


def option_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertcls export",
        description="Write a checkpoint of `bertcls fit` as a standard Hugging Face model folder "
        "(AutoModelFor...Classification, transformers.pipeline; pooling 'mean': a sentence-transformers folder) "
        "and/or an ONNX model. See docs/export.md.",
    )
    parser.add_argument("checkpoint", type=Path, help="a .ckpt file, or a DeepSpeed checkpoint folder (*.ckpt/)")
    parser.add_argument("--output", type=Path, required=True, help="the folder to write")
    parser.add_argument("--onnx", action="store_true", help="also write <output>/model.onnx")
    parser.add_argument("--onnx-only", action="store_true", help="only model.onnx and the tokenizer")
    parser.add_argument(
        "--quantize", choices=["int8"], help="with --onnx or --onnx-only: also write model.int8.onnx (int8 weights)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the Python code that comes with the model or tokenizer (an auto_map in its config): read it "
        "first. Off, such a checkpoint is refused (see docs/troubleshooting.md)",
    )
    return parser


def export(argv: list[str]) -> dict[str, Any]:
    """Run the command; return what was written and the measured differences."""
    options = option_parser().parse_args(argv)
    if options.quantize and not (options.onnx or options.onnx_only):
        raise InputError(
            f"--quantize {options.quantize} quantizes the ONNX model, and no ONNX model was asked for: add --onnx "
            "(or --onnx-only). For PyTorch, predict with --model.quantize int8 instead (see docs/inference.md)."
        )
    check_output(options.output, options.overwrite, "--output")
    checkpoint = load_checkpoint(options.checkpoint)
    trust_remote_code = options.trust_remote_code
    model = classifier(checkpoint, trust_remote_code)
    result: dict[str, Any] = {"folder": options.output}
    if not options.onnx_only and st_folder.mean_pooled(checkpoint["hyper_parameters"]):
        result["st_difference"], batch = write_st_folder(checkpoint, model, options, trust_remote_code)
    elif not options.onnx_only:
        exported = export_hf_folder(checkpoint, options.output, options.checkpoint, trust_remote_code)
        batch = sample_batch(options.output, trust_remote_code)
        result["hf_difference"] = logits_difference(model, exported, batch)
        print(f"Hugging Face folder: {options.output} (max |logits difference| {result['hf_difference']:.2e})")
    else:
        options.output.mkdir(parents=True, exist_ok=True)
        hparams = checkpoint["hyper_parameters"]
        write_tokenizer(checkpoint, hparams, options.output, options.checkpoint, trust_remote_code)
        batch = sample_batch(options.output, trust_remote_code)
    if options.onnx or options.onnx_only:
        from bertcls.export.onnx import check_onnx_parity, export_onnx

        path = export_onnx(model, options.output / "model.onnx")
        result["onnx_difference"] = check_onnx_parity(model, path, batch)
        print(f"ONNX model: {path} (max |logits difference| {result['onnx_difference']:.2e})")
        if options.quantize:
            from bertcls.export.onnx_int8 import export_int8

            result["int8_agreement"] = export_int8(model, path, batch)
    for name in ("hf_difference", "st_difference", "onnx_difference"):
        if result.get(name, 0.0) > MAX_DIFFERENCE:
            raise InputError(
                f"the exported model's logits differ from the checkpoint's by {result[name]:.2e} (more than "
                f"{MAX_DIFFERENCE}): the export is wrong. Please report it with the checkpoint's config."
            )
    return result


def classifier(checkpoint: dict[str, Any], trust_remote_code: bool = False) -> BertClassifier:
    """The checkpoint's ``BertClassifier`` (architecture from its hyperparameters, no download), in eval mode.

    ``trust_remote_code`` is the command line's, never the checkpoint's (see ``BertClassifier``).
    """
    hparams = {key: value for key, value in checkpoint["hyper_parameters"].items() if not key.startswith("_")}
    model = BertClassifier(**hparams | {"trust_remote_code": trust_remote_code})
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def write_st_folder(
    checkpoint: dict[str, Any], model: BertClassifier, options: argparse.Namespace, trust_remote_code: bool
) -> tuple[float, dict[str, torch.Tensor]]:
    """A mean-pooled model as a sentence-transformers folder; return its logits' difference and the sample batch."""
    folder = options.output
    exported = st_folder.export_st_folder(checkpoint, folder, options.checkpoint, trust_remote_code)
    batch = sample_batch(folder, trust_remote_code)
    difference = st_folder.logits_difference(model, exported, SENTENCES, batch)
    print(
        f"sentence-transformers folder: {folder} (max |logits difference| {difference:.2e}). Mean pooling has no "
        "transformers pipeline class: SentenceTransformer(folder).encode(texts) gives the logits (docs/export.md)."
    )
    return difference, batch


def sample_batch(folder: Path, trust_remote_code: bool = False) -> dict[str, torch.Tensor]:
    """The test sentences, tokenized by the exported tokenizer, padded into one batch."""
    tokenizer = load_tokenizer(str(folder), "--output", trust_remote_code)
    return dict(tokenizer(SENTENCES, padding=True, return_tensors="pt", return_token_type_ids=True))


@torch.inference_mode()
def logits_difference(model: BertClassifier, exported: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    expected = model(batch)
    actual = exported(**batch).logits
    mask = batch["attention_mask"].bool()
    if expected.dim() == 3:  # token logits: compare real tokens only
        expected, actual = expected[mask], actual[mask]
    return float((expected - actual).abs().max())
