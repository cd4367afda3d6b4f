"""Plumbing shared by the benchmarks in this folder: the benchmarks and their settings, one process per
system run (a ``Job`` in, a ``Result`` out), and the tables.

Nothing here imports torch, Lightning or transformers at module level: the parent process only spawns
children and prints.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
CONFIGS = REPO / "configs"
SEED = 42  # bertcls.cli.main's seed_everything default; no benchmark config changes it
DATA_FILE_KEYS = ("train_file", "validation_file", "test_file", "label_names_file")


# --- what is benchmarked ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Benchmark:
    """One data set and model config, i.e. one head; ``metrics`` are the columns of its table (the first one is
    the headline). ``compare`` pairs a bertcls metric with the Trainer's for the summary."""

    name: str
    head: str  # data.task
    config: Path
    title: str
    metrics: tuple[str, ...]
    compare: tuple[tuple[str, str], ...] = ()
    in_heads: bool = True  # one of heads.py's benchmarks (False: suite.py's only)

    def comparisons(self) -> tuple[tuple[str, str], ...]:
        return self.compare or ((self.metrics[0], self.metrics[0]),)


BENCHMARKS = {
    bench.name: bench
    for bench in (
        Benchmark("quickstart", "single_label", CONFIGS / "quickstart.yaml", "Rotten Tomatoes", ("accuracy",)),
        Benchmark(
            "imdb",
            "single_label",
            CONFIGS / "benchmarks/imdb-minilm.yaml",
            "IMDB reviews",
            ("accuracy",),
            in_heads=False,
        ),
        Benchmark("rte", "pair", CONFIGS / "benchmarks/rte-minilm.yaml", "GLUE RTE", ("accuracy",)),
        Benchmark(
            "mrpc",
            "pair",
            CONFIGS / "benchmarks/mrpc-minilm.yaml",
            "GLUE MRPC",
            ("f1_positive", "accuracy"),
            compare=(("f1_positive", "f1_positive"), ("accuracy", "accuracy")),
        ),
        Benchmark(
            "goemotions",
            "multi_label",
            CONFIGS / "benchmarks/goemotions-minilm.yaml",
            "GoEmotions",
            ("macro_f1@0.5", "macro_f1", "micro_f1@0.5", "mAP"),
            # bertcls' tuned per-label thresholds against the Trainer's fixed 0.5 (it has no tuning)
            compare=(("macro_f1@0.5", "macro_f1@0.5"), ("macro_f1", "macro_f1@0.5")),
        ),
        Benchmark(
            "conll2003",
            "token",
            CONFIGS / "benchmarks/conll2003-minilm.yaml",
            "CoNLL-2003 NER",
            ("entity_f1", "entity_precision", "entity_recall"),
        ),
    )
}
HEADS = {  # head -> its benchmarks
    head: [bench.name for bench in BENCHMARKS.values() if bench.head == head and bench.in_heads]
    for head in ("single_label", "pair", "multi_label", "token")
}


def compose(config: Path) -> dict[str, dict[str, Any]]:
    """The model, data and trainer sections of an experiment config; a section given as a file name is read
    from that file (relative to the config), as ``bertcls --config`` composes them."""
    import yaml

    experiment = yaml.safe_load(config.read_text())
    sections = {}
    for section in ("model", "data", "trainer"):
        value = experiment[section]
        sections[section] = yaml.safe_load((config.parent / value).read_text()) if isinstance(value, str) else value
    return sections


def evaluation_split(data: dict[str, Any]) -> str:
    """The split whose metrics are compared: ``test`` where the config has one, else the (held-out) validation."""
    return "test" if data.get("test_file") else "validation"


def data_files(data: dict[str, Any], workdir: Path, max_eval_rows: int) -> dict[str, str]:
    """The data config's files as absolute paths (they are relative to the repository root), ``pkg://`` ones
    as they are; with ``max_eval_rows``, the validation and test files are replaced by copies of their first rows.
    """
    files = {}
    for key in DATA_FILE_KEYS:
        location = data.get(key)
        if location:
            files[key] = location if location.startswith("pkg://") else str((REPO / location).resolve())
    if max_eval_rows:
        copies: dict[str, str] = {}  # RTE and MRPC use the dev file for both splits: one copy
        for key in ("validation_file", "test_file"):
            if key in files and not files[key].startswith("pkg://"):
                if files[key] not in copies:
                    target = workdir / "data" / f"first{max_eval_rows}-{Path(files[key]).name}"
                    copy_first_rows(Path(files[key]), target, max_eval_rows, data)
                    copies[files[key]] = str(target)
                files[key] = copies[files[key]]
    return files


def copy_first_rows(source: Path, target: Path, rows: int, data: dict[str, Any]) -> None:
    """The first ``rows`` examples of a data file, byte for byte: lines of a TSV (after its header, unless the
    config names headerless columns), or sentences of a CoNLL file (blank-line separated)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = source.read_bytes().splitlines(keepends=True)
    if data.get("task") == "token":
        kept, sentences, in_sentence = [], 0, False
        for line in lines:
            if sentences == rows:
                break
            kept.append(line)
            words = line.split()
            if words and words[0] != b"-DOCSTART-":
                in_sentence = True
            elif in_sentence:  # a blank line (or a document start) ends the sentence
                sentences, in_sentence = sentences + 1, False
    elif source.suffix in (".tsv", ".txt"):  # TSV fields cannot hold line breaks: one line per row
        header = 0 if data.get("column_names") else 1
        kept = lines[: header + rows]
    else:
        raise SystemExit(f"--max-eval-rows: cannot cut {source} (only TSV and CoNLL files)")
    target.write_bytes(b"".join(kept))


# --- one system run in its own process ---------------------------------------------------------------
@dataclass
class Job:
    """What a child process runs: one system on one benchmark, in ``workdir`` (its cwd, logs and caches)."""

    system: str
    benchmark: str
    workdir: str
    data_files: dict[str, str]
    max_train_batches: int = 0  # optimizer steps per epoch; 0: all
    epochs: int | None = None  # None: the config's
    batch_size: int | None = None  # None: the config's
    precision: str | None = None  # Lightning's names (32-true, bf16-mixed); None: the config's
    eval_every: int = 0  # also evaluate every N optimizer steps, for the learning curve (0: at the end only)
    model_name: str | None = None  # None: the config's model.model_name
    max_length: int | None = None  # None: the config's data.max_length


@dataclass
class Result:
    system: str
    steps: int
    samples: int
    real_tokens: int
    padded_tokens: int
    train_seconds: float
    peak_rss_mb: float
    metrics: dict[str, float]  # on the evaluation split, bertcls' names without the val/ or test/ prefix
    train_rows: str  # fingerprints of the train / evaluation examples' source rows
    eval_rows: str
    train_count: int  # source rows (texts, or sentences for NER)
    eval_count: int
    optimizer: str
    torch_threads: int
    repeats: list[float] = field(default_factory=list)  # samples/s of every run of this system (best shown)
    real_token_squares: int = 0  # sum over training examples of (real tokens)^2: the attention term of MFU
    peak_device_mb: float | None = None  # torch.cuda.max_memory_allocated, where there is a GPU
    precision: str = "32-true"
    curve: list[dict[str, Any]] = field(default_factory=list)  # {"step", "seconds" (training only), "metrics"}

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.train_seconds

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.padded_tokens

    def as_json(self) -> dict[str, Any]:
        rates = ("samples_per_s", "tokens_per_s", "padding_efficiency")
        return asdict(self) | {name: getattr(self, name) for name in rates}


class ChildFailed(Exception):
    pass


def spawn(script: Path, job: Job) -> Result:
    """Run ``job`` as ``python script --child job.json`` in a fresh process, in its own folder."""
    run_dir = Path(job.workdir)
    run_dir.mkdir(parents=True)
    job_file, result_file, log_file = run_dir / "job.json", run_dir / "result.json", run_dir / "log.txt"
    job_file.write_text(json.dumps(asdict(job)))
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(run_dir / "hf-datasets-cache"),
        "WANDB_MODE": "disabled",
        "BERTCLS_CACHE": str(run_dir / "bertcls-cache"),
    }
    print(f"running {job.system} on {job.benchmark} (log: {log_file}) ...", end=" ", flush=True)
    command = [sys.executable, str(script), "--child", str(job_file)]
    started = time.perf_counter()
    with log_file.open("w") as log:
        completed = subprocess.run(command, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    print(f"{time.perf_counter() - started:.0f} s", flush=True)
    if completed.returncode:
        tail = "\n".join(log_file.read_text().splitlines()[-30:])
        raise ChildFailed(
            f"{job.system} on {job.benchmark} failed (exit {completed.returncode}); end of {log_file}:\n{tail}"
        )
    return Result(**json.loads(result_file.read_text()))


def run_child(job_file: str, systems: dict[str, Callable[[Job], dict[str, Any]]]) -> None:
    """In the child: run the job's system and write its ``Result`` next to the job file."""
    job = Job(**json.loads(Path(job_file).read_text()))
    figures = systems[job.system](job)
    figures.setdefault("peak_rss_mb", peak_rss_mb())
    result = Result(system=job.system, **figures)
    (Path(job_file).parent / "result.json").write_text(json.dumps(asdict(result)))


# --- measuring helpers, used inside the children ----------------------------------------------------------
class TrainClock:
    """Training seconds only: the time from a (re)start to each finished optimizer step is added, so evaluations
    in between are not counted. Call ``restart`` when training starts or resumes (epoch start, after an
    evaluation), ``step_done`` after each optimizer step."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.mark = time.perf_counter()

    def restart(self) -> None:
        self.mark = time.perf_counter()

    def step_done(self) -> None:
        now = time.perf_counter()
        self.seconds += now - self.mark
        self.mark = now


class BatchMeter:
    """Examples, real and padded tokens of the training batches, from their attention masks (``paused``: ignore
    the batches of an evaluation collated by the same function)."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, int, int]] = []  # examples, real, padded, sum of squared real lengths
        self.paused = False

    def add(self, attention_mask: Any) -> None:
        if not self.paused:
            lengths = attention_mask.sum(dim=1).long()
            self.batches.append(
                (len(attention_mask), int(lengths.sum()), attention_mask.numel(), int((lengths**2).sum()))
            )

    def figures(self, steps: int | None = None) -> dict[str, int]:
        """The totals of the first ``steps`` batches (default all: a loader may have collated one ahead)."""
        kept = self.batches[:steps]
        names = ("samples", "real_tokens", "padded_tokens", "real_token_squares")
        return {name: sum(batch[index] for batch in kept) for index, name in enumerate(names)}


def peak_device_mb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def rows_digest(rows: Iterable[int]) -> str:
    """Order-independent fingerprint of a split's source rows (a sentence split into windows counts once)."""
    return hashlib.sha256(",".join(map(str, sorted({int(row) for row in rows}))).encode()).hexdigest()[:16]


def describe_optimizer(optimizer: Any) -> str:
    return f"{type(optimizer).__name__}(fused={optimizer.defaults.get('fused')})"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- tables ---------------------------------------------------------------------------------------------
def print_table(results: list[Result], metrics: Iterable[str]) -> None:
    metrics = list(metrics)
    width = max(12, *(len(r.system) for r in results))
    header = f"{'system':<{width}} {'samples/s':>10} {'real tok/s':>11} {'padding eff':>12} {'peak RSS MB':>12}"
    header += f" {'train s':>8} {'steps':>6}" + "".join(f" {name:>{max(8, len(name))}}" for name in metrics)
    print(header)
    print("-" * len(header))
    for r in results:
        cells = "".join(f" {format_metric(r.metrics.get(name)):>{max(8, len(name))}}" for name in metrics)
        print(
            f"{r.system:<{width}} {r.samples_per_s:>10.1f} {r.tokens_per_s:>11.0f} {r.padding_efficiency:>12.3f} "
            f"{r.peak_rss_mb:>12.0f} {r.train_seconds:>8.1f} {r.steps:>6}{cells}"
        )


def format_metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
