"""``bench/gpu_acceptance.py``: its ``--dry-run`` (every line on the CPU at tiny shapes) works and prints the table a
person pastes into an issue, and its pieces (the profiler report, the summary line, a crashing line) behave.

The dry run takes about 4 minutes on 2 idle CPU cores (14 ``bertcls fit`` and benchmark processes; up to 8 on a busy
machine), hence the ``strategies`` marker: `.ci/run` runs it after the default suite.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
import gpu_acceptance
from gpu_acceptance import Context, Line, Outcome, host_overhead, read_simple_profile, run_line, summary

TABLE_LINE = re.compile(r"^\s*(\d+)\s+(PASS|FAIL|SKIP)\s+(.+?)\s+\d+\s+(.+)\s+\[(.+)\]$")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$")
DEEPSPEED_LINES = ("ZeRO",)
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


@pytest.fixture(scope="module")
def dry_run() -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "gpu_acceptance.py"), "--dry-run"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


@pytest.mark.strategies
def test_dry_run_prints_every_line_with_a_status_and_the_summary_last(dry_run: subprocess.CompletedProcess) -> None:
    print(dry_run.stdout)  # the table, with -rP
    output = dry_run.stdout.splitlines()
    rows = [match.groups() for match in map(TABLE_LINE.match, output) if match]
    assert [int(number) for number, *_ in rows] == list(range(1, 15)), dry_run.stdout + dry_run.stderr[-3000:]
    assert output[-1] == summary([Line(check, status, "", "", 0) for _, status, check, *_ in rows])
    passed, failed, skipped = SUMMARY.match(output[-1]).groups()
    assert int(passed) + int(failed) + int(skipped or 0) == 14
    assert dry_run.returncode == (1 if int(failed) else 0)
    for _, status, check, _, rule in rows:
        if status == "SKIP":
            assert not HAS_DEEPSPEED and any(name in check for name in DEEPSPEED_LINES), check
        else:
            assert status == "PASS", f"{check}: {dry_run.stdout}"
        assert rule.strip(), check


def test_a_crashing_line_fails_with_its_reason_and_the_next_one_runs(tmp_path: Path) -> None:
    ctx = Context(gpu_acceptance.DRY_RUN, tmp_path, keep=False)

    def crash(_: Context) -> Outcome:
        raise RuntimeError("first line\nCUDA error: an illegal memory access")

    lines = [run_line(ctx, "crashes", crash), run_line(ctx, "runs", lambda _: Outcome("42", "it ran", True))]
    assert [(line.status, line.measured) for line in lines] == [
        ("FAIL", "RuntimeError: CUDA error: an illegal memory access"),
        ("PASS", "42"),
    ]
    assert summary(lines) == "1 passed, 1 failed"
    assert summary([*lines, Line("zero", "SKIP", "", "", 0)]) == "1 passed, 1 failed, 1 skipped"


def test_a_run_that_failed_fails_every_line_that_needs_it_without_running_again(tmp_path: Path) -> None:
    ctx, calls = Context(gpu_acceptance.DRY_RUN, tmp_path, keep=False), []

    def run() -> None:
        calls.append(1)
        raise gpu_acceptance.Failure("reference run: exit 1")

    for _ in range(2):
        with pytest.raises(gpu_acceptance.Failure, match="reference run"):
            ctx.once("smoke ddp", run)
    assert calls == [1]


def simple_profiler_report(path: Path, means: dict[str, tuple[float, int]]) -> Path:
    """The report Lightning's SimpleProfiler writes, of actions with these (mean seconds, calls)."""
    from lightning.pytorch.profilers import SimpleProfiler

    profiler = SimpleProfiler()
    profiler._stage = "fit"
    for action, (mean, calls) in means.items():
        profiler.recorded_durations[action] = [mean] * calls
    path.write_text(profiler.summary())
    return path


ACTIONS = {
    "run_training_epoch": (1.0, 1),
    "run_training_batch": (0.02, 30),
    "[LightningModule]BertClassifier.optimizer_step": (0.019, 30),
    "[Strategy]DDPStrategy.training_step": (0.008, 30),
    "[Strategy]DDPStrategy.backward": (0.009, 30),
    "[Callback]Throughput.on_train_batch_end": (0.001, 30),
    "[Callback]BestCheckpoint{'monitor': 'val/f1|macro', 'mode': 'max'}.on_train_batch_end": (0.0005, 30),
    "[Callback]TimedLastCheckpoint.on_train_batch_end": (0.1, 30),  # with its saves
    "[Callback]RecordBatches.on_train_batch_end": (0.004, 30),  # the recorder's device sync
    "[_TrainingEpochLoop].train_dataloader_next": (0.002, 30),
    "[LightningModule]BertClassifier.on_before_optimizer_step": (0.0005, 30),
    "save_checkpoint": (0.2, 3),
}


def test_host_overhead_from_a_simple_profiler_report(tmp_path: Path) -> None:
    """Hooks, loading and transfers, without the acceptance recorder and the checkpoint saves; the step is
    run_training_batch and the actions around it (the recorder's device sync included, saves not)."""
    means = read_simple_profile(simple_profiler_report(tmp_path / "fit-profile.txt", ACTIONS))
    assert means["run_training_batch"] == 0.02
    assert means["[Callback]BestCheckpoint{'monitor': 'val/f1|macro', 'mode': 'max'}.on_train_batch_end"] == 0.0005
    assert "Total" not in means
    overhead, step, largest = host_overhead(means)
    assert overhead == pytest.approx(0.001 + 0.0005 + 0.002 + 0.0005)
    assert step == pytest.approx(0.02 + 0.001 + 0.0005 + 0.004 + 0.002)
    assert largest == "[_TrainingEpochLoop].train_dataloader_next 2.00 ms"
