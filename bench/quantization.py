"""int8 against fp32 on real data: what ``--model.quantize int8`` and ``bertcls export --quantize int8`` cost in
labels and accuracy.

For each data set, the packaged all-MiniLM-L6-v2 is fine-tuned by the real ``bertcls fit`` (its benchmark config,
in a process of its own; or ``--checkpoint NAME=PATH`` takes a checkpoint already trained), then the checkpoint's
model classifies the validation split three ways, on the same batches (``bertcls``' length-bucketed ones):

    fp32          the checkpoint's model, as ``bertcls validate`` / ``predict`` run it
    torch int8    its ``nn.Linear`` layers quantized (``bertcls.inference.quantization``: ``--model.quantize int8``)
    onnx int8     its ONNX export quantized by ONNX Runtime (``bertcls.export.onnx_int8``: ``export --quantize int8``)

and each int8 model is compared with fp32: label agreement (target at least 99.5%), accuracy difference (target
within 0.5 points), largest |probability difference|.

    rotten_tomatoes  configs/quickstart.yaml                    8,530 sentences, 2 labels (853 validation)
    bbc_news         configs/benchmarks/bbc-news-minilm.yaml    BBC News, 5 topics: AG-News-like (334 validation)

    python bench/quantization.py                               # both: about 15 minutes on 2 cores (fine-tunes)
    python bench/quantization.py --data bbc_news --max-steps 40
    python bench/quantization.py --checkpoint rotten_tomatoes=checkpoints/quickstart/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from harness import CONFIGS, REPO, compose, data_files

from bertcls.data.datamodule import ClassificationDataModule
from bertcls.inference.cpu_levers import cpu_levers
from bertcls.inference.quantization import quantize_linear_layers
from bertcls.model.module import BertClassifier

DATA_SETS = {  # name -> (config, title)
    "rotten_tomatoes": (CONFIGS / "quickstart.yaml", "Rotten Tomatoes sentences"),
    "bbc_news": (CONFIGS / "benchmarks/bbc-news-minilm.yaml", "BBC News topics (AG-News-like)"),
}
MIN_AGREEMENT = 0.995
MAX_ACCURACY_DROP = 0.005
Forward = Callable[[dict[str, torch.Tensor]], np.ndarray]


@dataclass
class Outcome:
    probabilities: np.ndarray
    seconds: float


# --- the checkpoint ------------------------------------------------------------------------------------
def fine_tune(config: Path, workdir: Path, args: argparse.Namespace) -> Path:
    """``bertcls fit`` of ``config`` in a child process; its ``last.ckpt`` (the final weights)."""
    command = [sys.executable, "-m", "bertcls", "fit", "--config", str(config)]
    command += ["--trainer.logger.init_args.save_dir", str(workdir), "--trainer.default_root_dir", str(workdir)]
    command += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    if args.max_epochs:
        command += ["--trainer.max_epochs", str(args.max_epochs)]
    if args.max_steps:
        command += ["--trainer.max_steps", str(args.max_steps)]
    print(" ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)  # the configs' data paths are relative to the repository
    (last,) = workdir.glob("*/*/checkpoints/last.ckpt")
    return last


def validation_batches(config: Path, model: BertClassifier) -> list[dict[str, torch.Tensor]]:
    """The validation split of ``config``'s data (held out as ``bertcls fit`` held it out), in bertcls' batches."""
    data = compose(config)["data"]
    files = data_files(data, Path(tempfile.gettempdir()), 0)
    options = {key: value for key, value in data.items() if key not in files}
    datamodule = ClassificationDataModule(
        task=model.hparams.task,
        tokenizer=model.hparams.model_name,
        label_names=list(model.hparams.label_names),
        **options,
        **files,
    )
    datamodule.setup("validate")
    return list(datamodule.val_dataloader())


# --- the three models ----------------------------------------------------------------------------------
def torch_forward(model: BertClassifier) -> Forward:
    def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
        with torch.inference_mode():
            return model(batch).float().softmax(dim=-1).numpy()

    return forward


def onnx_int8_forward(model: BertClassifier, workdir: Path) -> Forward:
    from bertcls.export.onnx import onnx_inputs, onnx_session
    from bertcls.export.onnx_int8 import quantize_onnx

    session = onnx_session(quantize_onnx(model, workdir / "model.int8.onnx"), threads=torch.get_num_threads())

    def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
        (logits,) = session.run(["logits"], onnx_inputs(batch))
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)

    return forward


def classify(forward: Forward, batches: list[dict[str, torch.Tensor]]) -> Outcome:
    started = time.perf_counter()
    probabilities = np.concatenate([forward(batch) for batch in batches])
    return Outcome(probabilities, time.perf_counter() - started)


# --- the comparison ------------------------------------------------------------------------------------
def evaluate(name: str, checkpoint: Path, workdir: Path, onnx: bool) -> dict[str, Any]:
    config, title = DATA_SETS[name]
    model = BertClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    batches = validation_batches(config, model)
    labels = np.concatenate([batch["labels"].numpy() for batch in batches])
    int8 = copy.deepcopy(model)
    quantize_linear_layers(int8)
    forwards = {"fp32": torch_forward(model), "torch int8": torch_forward(int8)}
    if onnx:
        forwards["onnx int8"] = onnx_int8_forward(model, workdir)
    outcomes = {runner: classify(forward, batches) for runner, forward in forwards.items()}
    reference = outcomes["fp32"].probabilities
    rows = {}
    for runner, outcome in outcomes.items():
        predicted = outcome.probabilities.argmax(axis=1)
        rows[runner] = {
            "accuracy": float((predicted == labels).mean()),
            "agreement": float((predicted == reference.argmax(axis=1)).mean()),
            "differing": int((predicted != reference.argmax(axis=1)).sum()),
            "max_probability_difference": float(np.abs(outcome.probabilities - reference).max()),
            "seconds": outcome.seconds,
        }
    for row in rows.values():
        row["accuracy_difference"] = row["accuracy"] - rows["fp32"]["accuracy"]
        row["passes"] = row["agreement"] >= MIN_AGREEMENT and abs(row["accuracy_difference"]) <= MAX_ACCURACY_DROP
    print_table(f"{title}: {len(labels)} validation rows, checkpoint {checkpoint}", rows)
    return {"checkpoint": str(checkpoint), "rows": len(labels), "runners": rows}


def print_table(title: str, rows: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    header = f"{'runner':<11} {'accuracy':>8} {'vs fp32':>8} {'agreement':>9} {'differ':>6} {'max |dp|':>8} {'s':>6}"
    print(header)
    print("-" * len(header))
    for runner, row in rows.items():
        verdict = "" if runner == "fp32" else ("  pass" if row["passes"] else "  FAIL")
        print(
            f"{runner:<11} {100 * row['accuracy']:>7.2f}% {100 * row['accuracy_difference']:>+6.2f}pt "
            f"{100 * row['agreement']:>8.2f}% {row['differing']:>6} {row['max_probability_difference']:>8.1e} "
            f"{row['seconds']:>6.1f}{verdict}"
        )
    agreement, drop = 100 * MIN_AGREEMENT, 100 * MAX_ACCURACY_DROP
    print(f"targets: agreement >= {agreement:.1f}%, accuracy within {drop:.1f} points of fp32")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=",".join(DATA_SETS), help=f"comma-separated, of: {', '.join(DATA_SETS)}")
    parser.add_argument(
        "--checkpoint", action="append", default=[], help="NAME=PATH: evaluate this checkpoint instead of fitting"
    )
    parser.add_argument("--max-epochs", type=int, help="fine-tuning epochs (default: the config's)")
    parser.add_argument("--max-steps", type=int, help="stop fine-tuning after this many optimizer steps")
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: torch's)")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="leave out ONNX Runtime's int8")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    args.data = [name.strip() for name in args.data.split(",") if name.strip()]
    unknown = [name for name in args.data if name not in DATA_SETS]
    if unknown:
        parser.error(f"--data: unknown {unknown}; choose from {list(DATA_SETS)}")
    args.checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(cpu_levers().describe(), flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bertcls-quantization-") as scratch:
        for name in args.data:
            workdir = Path(scratch) / name
            workdir.mkdir()
            checkpoint = args.checkpoints.get(name) or fine_tune(DATA_SETS[name][0], workdir, args)
            results[name] = evaluate(name, Path(checkpoint).resolve(), workdir, args.onnx)
    if args.json:
        args.json.write_text(
            json.dumps({"settings": vars(args) | {"json": str(args.json)}, "results": results}, default=str)
        )
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
