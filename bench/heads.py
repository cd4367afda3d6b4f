"""bertcls against the Hugging Face ``Trainer`` for each head: same model, data and settings; throughput and metric.

For each benchmark (one per head; ``pair`` has two), all-MiniLM-L6-v2 is fine-tuned twice: by bertcls through
its real CLI (``bertcls fit``, then ``bertcls test`` on ``last.ckpt`` where the config has a test split), and
by the Hugging Face example-script recipe in ``hf_trainer.py``. Each run is a process of its own.

    single_label  quickstart  configs/quickstart.yaml                  accuracy (held-out validation)
    pair          rte         configs/benchmarks/rte-minilm.yaml        accuracy (dev)
    pair          mrpc        configs/benchmarks/mrpc-minilm.yaml       F1 of label 1, accuracy (dev)
    multi_label   goemotions  configs/benchmarks/goemotions-minilm.yaml macro-F1 at 0.5 and tuned (test)
    token         conll2003   configs/benchmarks/conll2003-minilm.yaml  entity F1, seqeval (test)

    python bench/heads.py                                          # the real benchmark: hours on 2 CPU cores
    python bench/heads.py --epochs 1 --max-train-batches 10 --max-eval-rows 200     # smoke run
    python bench/heads.py --heads pair,token --repeats 2 --json results.json

Throughput counts only the training loop: from each epoch's start to its last optimizer step (data
loading, forward, backward, clipping, optimizer and scheduler steps, logging), without model loading,
tokenization, validation, checkpoint writes or testing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import (
    BENCH,
    BENCHMARKS,
    HEADS,
    REPO,
    SEED,
    Benchmark,
    ChildFailed,
    Job,
    Result,
    compose,
    data_files,
    evaluation_split,
    format_metric,
    print_table,
    run_child,
    spawn,
)


# --- bertcls: its real CLI, with a measuring callback ---------------------------------------------
def run_bertcls(job: Job) -> dict[str, Any]:
    from bertcls.cli import main

    sys.path.insert(0, str(BENCH))  # so the CLI can import lightning_meter.LightningMeter
    bench, workdir = BENCHMARKS[job.benchmark], Path(job.workdir)

    def meter(output: Path) -> str:
        callback = {"class_path": "lightning_meter.LightningMeter", "init_args": {"output": str(output)}}
        return f"--trainer.callbacks+={json.dumps(callback)}"

    common = ["--config", str(bench.config), "--trainer.logger.init_args.save_dir", str(workdir / "bertcls-logs")]
    common += ["--trainer.accelerator", "auto", "--trainer.devices", "1"]  # one GPU where there is one, as the others
    for key, location in job.data_files.items():  # absolute paths (the configs' are relative to the repository)
        common += [f"--data.{key}", location]
    if job.batch_size:
        common += ["--data.batch_size", str(job.batch_size)]
    if job.model_name:
        common += ["--model.model_name", job.model_name]
    if job.precision:
        common += ["--trainer.precision", job.precision]
    if job.max_length:
        common += ["--data.max_length", str(job.max_length)]
    fit = ["fit", *common, "--trainer.default_root_dir", str(workdir), meter(workdir / "bertcls-fit.json")]
    if job.epochs:
        fit += ["--trainer.max_epochs", str(job.epochs)]
    if job.max_train_batches:
        fit += ["--trainer.limit_train_batches", str(job.max_train_batches)]
    if job.eval_every:
        fit += ["--trainer.val_check_interval", str(job.eval_every)]
    main(fit)
    figures = json.loads((workdir / "bertcls-fit.json").read_text())
    if evaluation_split(compose(bench.config)["data"]) == "test":  # the final weights, as the Trainer's
        (last,) = workdir.glob("bertcls-logs/*/*/checkpoints/last.ckpt")
        main(["test", *common, "--ckpt_path", str(last), meter(workdir / "bertcls-test.json")])
        figures |= json.loads((workdir / "bertcls-test.json").read_text())
    return figures


def run_hf(job: Job) -> dict[str, Any]:
    from hf_trainer import run_hf_trainer

    return run_hf_trainer(job, group_by_length=job.system.endswith("(group_by_length)"))


SYSTEMS = {"bertcls": run_bertcls, "HF Trainer": run_hf, "HF Trainer (group_by_length)": run_hf}


# --- the parent: run, tabulate, compare ------------------------------------------------------------
def describe(bench: Benchmark, args: argparse.Namespace, results: list[Result]) -> str:
    model, data, trainer = compose(bench.config).values()
    epochs = args.epochs or trainer["max_epochs"]
    steps = f", {args.max_train_batches} steps/epoch" if args.max_train_batches else ""
    r = results[0]
    return (
        f"{bench.head}: {bench.name} ({bench.title}), {bench.config.relative_to(REPO)}\n"
        f"  {epochs} epoch(s){steps}, batch {args.batch_size or data.get('batch_size', 32)}, "
        f"max_length {data.get('max_length', 128)}, lr {model['learning_rate']:g}, "
        f"warmup {model.get('warmup_ratio', 0.1):g}, weight decay {model.get('weight_decay', 0.01):g}, "
        f"clip {trainer.get('gradient_clip_val')}, seed {SEED}; {r.train_count} training rows, "
        f"evaluation: {evaluation_split(data)} split, {r.eval_count} rows"
    )


def run_benchmark(bench: Benchmark, args: argparse.Namespace, workdir: Path) -> list[Result]:
    """Every system ``args.repeats`` times, alternated (slow spells of a shared machine hit all); the fastest
    run of each system is returned, with all its speeds in ``repeats``."""
    data = compose(bench.config)["data"]
    if data.get("task", "single_label") != bench.head:
        raise ChildFailed(f"{bench.config.relative_to(REPO)} has data.task {data.get('task')}, not {bench.head}")
    bench_dir = workdir / bench.name
    files = data_files(data, bench_dir, args.max_eval_rows)
    systems = ["bertcls", "HF Trainer"] + ["HF Trainer (group_by_length)"] * args.trainer_group_by_length
    runs: dict[str, list[Result]] = {system: [] for system in systems}
    for repeat in range(args.repeats):
        for index, system in enumerate(systems):
            run_dir = bench_dir / f"{repeat}-{index}-{system.split()[0].lower()}"
            job = Job(system, bench.name, str(run_dir), files, args.max_train_batches, args.epochs, args.batch_size)
            runs[system].append(spawn(Path(__file__).resolve(), job))
    best = []
    for system_runs in runs.values():
        fastest = max(system_runs, key=lambda r: r.samples_per_s)
        fastest.repeats = [r.samples_per_s for r in system_runs]
        best.append(fastest)
    return best


def print_benchmark(bench: Benchmark, args: argparse.Namespace, results: list[Result]) -> None:
    print()
    print(describe(bench, args, results))
    print_table(results, bench.metrics)
    for r in results:
        if len(r.repeats) > 1:
            speeds = ", ".join(f"{speed:.1f}" for speed in r.repeats)
            noisy = (
                "  (differ by more than 20%: the machine was noisy)" if max(r.repeats) > 1.2 * min(r.repeats) else ""
            )
            print(f"  {r.system}: samples/s of the {len(r.repeats)} runs: {speeds}{noisy}")
    same = len({(r.train_rows, r.eval_rows) for r in results}) == 1
    print(f"  identical training and evaluation rows: {'yes' if same else 'NO'}")
    print("  optimizers: " + "; ".join(f"{r.system} {r.optimizer}" for r in results))
    if any(r.torch_threads != results[0].torch_threads for r in results):
        print("  torch threads differ: " + ", ".join(f"{r.system} {r.torch_threads}" for r in results))


def summary_rows(bench: Benchmark, results: list[Result]) -> list[dict[str, Any]]:
    """bertcls / Trainer ratios: samples/s, and each compared metric (bertcls' name vs the Trainer's)."""
    bertcls, others = results[0], results[1:]
    rows = []
    for other in others:
        for ours, theirs in bench.comparisons():
            a, b = bertcls.metrics.get(ours), other.metrics.get(theirs)
            rows.append({
                "benchmark": bench.name,
                "head": bench.head,
                "against": other.system,
                "bertcls_samples_per_s": bertcls.samples_per_s,
                "other_samples_per_s": other.samples_per_s,
                "samples_per_s_ratio": bertcls.samples_per_s / other.samples_per_s,
                "metric": ours if ours == theirs else f"{ours} vs {theirs}",
                "bertcls_metric": a,
                "other_metric": b,
                "metric_ratio": a / b if a is not None and b else None,
            })  # fmt: skip
    return rows


def print_summary(rows: list[dict[str, Any]], failed: dict[str, str]) -> None:
    print()
    print("Summary: bertcls / Hugging Face Trainer (ratios above 1 favour bertcls)")
    header = (
        f"{'benchmark':<11} {'head':<12} {'against':<28} {'bertcls/s':>9} {'other/s':>8} {'ratio':>6}  "
        f"{'metric':<26} {'bertcls':>7} {'other':>7} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = f"{row['metric_ratio']:.3f}" if row["metric_ratio"] is not None else "-"
        print(
            f"{row['benchmark']:<11} {row['head']:<12} {row['against']:<28} {row['bertcls_samples_per_s']:>9.1f} "
            f"{row['other_samples_per_s']:>8.1f} {row['samples_per_s_ratio']:>5.2f}x  {row['metric']:<26} "
            f"{format_metric(row['bertcls_metric']):>7} {format_metric(row['other_metric']):>7} {ratio:>6}"
        )
    for name, reason in failed.items():
        print(f"{name}: FAILED: {reason.splitlines()[0]}")


def select_benchmarks(spec: str) -> list[Benchmark]:
    names: list[str] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        if item not in HEADS and item not in BENCHMARKS:
            raise SystemExit(f"--heads: unknown '{item}'; choose from {', '.join([*HEADS, *BENCHMARKS])}")
        names += HEADS.get(item, [item])
    return [BENCHMARKS[name] for name in dict.fromkeys(names)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--heads", default=",".join(HEADS), help=f"heads or benchmarks, comma-separated (default: all; {HEADS})"
    )
    parser.add_argument("--epochs", type=int, help="epochs on both sides (default: each config's max_epochs)")
    parser.add_argument("--max-train-batches", type=int, default=0, help="optimizer steps per epoch (0: all)")
    parser.add_argument("--max-eval-rows", type=int, default=0, help="first N rows of validation/test files (0: all)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default: each config's)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per system, alternated; the fastest is shown")
    parser.add_argument("--trainer-group-by-length", action="store_true", help="add a group_by_length Trainer row")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, checkpoints)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a job file: run one system (in a child process)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, SYSTEMS)
        return
    benchmarks = select_benchmarks(args.heads)
    if importlib.util.find_spec("accelerate") is None:
        raise SystemExit("The Hugging Face Trainer needs accelerate: pip install 'accelerate>=1.1' psutil")
    workdir = Path(tempfile.mkdtemp(prefix="bertcls-bench-"))
    results: dict[str, list[Result]] = {}
    failed: dict[str, str] = {}
    for bench in benchmarks:
        try:
            results[bench.name] = run_benchmark(bench, args, workdir)
        except ChildFailed as error:  # e.g. a head that is not finished yet: go on with the others
            failed[bench.name] = str(error)
            print(f"\n{bench.name}: {error}", flush=True)
            continue
        print_benchmark(bench, args, results[bench.name])
    rows = [row for bench in benchmarks if bench.name in results for row in summary_rows(bench, results[bench.name])]
    print_summary(rows, failed)
    print(
        "Peak RSS: the whole process, model loading and evaluation included; bertcls' also includes Lightning "
        "writing checkpoints, the Trainer saves none."
    )

    if args.json:
        settings = ("heads", "epochs", "max_train_batches", "max_eval_rows", "batch_size", "repeats")
        report = {
            "settings": {key: getattr(args, key) for key in settings},
            "results": {name: [r.as_json() for r in bench_results] for name, bench_results in results.items()},
            "summary": rows,
            "failed": failed,
        }
        args.json.write_text(json.dumps(report, indent=2))
        print(f"results written to {args.json}")
    if args.keep or failed:
        print(f"outputs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
