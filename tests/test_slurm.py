"""The slurm/ scripts on a real SLURM cluster: a single-node one on this machine (shared/tools/slurm-local-up.sh).

The jobs are the project's own sbatch scripts, submitted as a user would submit their CPU variant
(``BERTCLS_ACCELERATOR=cpu sbatch --gpus-per-node=0 --ntasks-per-node=2 ...``), training the tiny BERT:

* a 2-rank DDP job (gloo) finishes, both ranks took part, and they end with identical weights;
* a job signalled with SIGUSR1 mid-training (as ``--signal=SIGUSR1@90`` does before a time limit) saves, requeues
  itself, resumes in the same ``slurm-<job id>`` run folder and ends after exactly the optimizer steps of an
  uninterrupted run, with its log and ``metrics.csv`` continued;
* a 3-task job array runs one line of a sweep file per task, each in its own ``slurm-<array job>_<task>`` folder;
* every script's ``srun`` passes the job's ``--cpus-per-task`` on (srun of SLURM 22.05-23.02 does not inherit it),
  and, where the job has GPUs (the cluster here has fake ones), ``--gpu-bind=none``: a job that binds one GPU to
  each task (``--gpus-per-task=1``) still shows every task all of its node's GPUs.

Where the cluster cannot be started (not root, no Debian packages, no SLURM tools), every test here is skipped
with the start-up script's output as the reason, also printed to stderr and raised as a warning.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from helpers import CONFIGS, REPO_ROOT, SHARED_DATA, separable_frame, write_frame
from wandb_files import offline_runs

pytestmark = pytest.mark.slurm

TOOLS = SHARED_DATA.parent / "tools"  # CI keeps shared/ beside the checkout, as for the data sets
SLURM = REPO_ROOT / "slurm"
# The CPU variant of the scripts: command-line sbatch options override the scripts' #SBATCH lines (GPUs, sizes).
CPU_TASKS = ["--gpus-per-node=0", "--cpus-per-task=1", "--mem=2G", "--time=10"]
BATCH_SIZE = 8
NEVER_RUNS = ("Partition", "Bad", "Invalid", "JobHeld", "ReqNodeNotAvail")


# --- the cluster ---------------------------------------------------------------------------------------------
def cluster_answers() -> bool:
    if shutil.which("scontrol") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    return "UP" in ping.stdout


def skip_loudly(reason: str) -> None:
    message = f"SLURM tests skipped: {reason}"
    print(f"\n{message}", file=sys.__stderr__, flush=True)
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[None]:
    """A running SLURM cluster: the one already up, else one started here (and stopped again at the end)."""
    if cluster_answers():
        yield
        return
    up = TOOLS / "slurm-local-up.sh"
    if not up.is_file():
        skip_loudly(f"no cluster answers `scontrol ping`, and {up} is missing")
    # The node's CPUs default to `nproc`, which obeys OMP_NUM_THREADS (1 in the tests): a 1-CPU node never runs a
    # 2-task job. Declare the real count, and at least 2 (the script then oversubscribes).
    env = {name: value for name, value in os.environ.items() if not name.startswith("OMP_")}
    env["SLURM_LOCAL_CPUS"] = os.environ.get("SLURM_LOCAL_CPUS", str(max(2, len(os.sched_getaffinity(0)))))
    # Fake GPUs (no device behind them) let GPU requests and SLURM's GPU binding be tested; CPU jobs ignore them.
    env["SLURM_LOCAL_GPUS"] = os.environ.get("SLURM_LOCAL_GPUS", "2")
    try:
        started = subprocess.run(["bash", str(up)], env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as timeout:
        skip_loudly(f"{up} did not finish in 600 s; output tail:\n{str(timeout.stdout or '')[-3000:]}")
    if started.returncode != 0:
        tail = (started.stdout + started.stderr)[-3000:]
        skip_loudly(f"{up} failed (exit {started.returncode}); output tail:\n{tail}")
    try:
        yield
    finally:
        down = subprocess.run(["bash", str(TOOLS / "slurm-local-down.sh")], capture_output=True, text=True)
        if down.returncode != 0:
            print(f"slurm-local-down.sh failed:\n{down.stdout}{down.stderr}", file=sys.__stderr__)


# --- jobs ----------------------------------------------------------------------------------------------------
def job_environment(folder: Path, **extra: str) -> dict[str, str]:
    """What the submitting shell exports (sbatch passes it on): this Python first on the PATH, offline, the CPU
    variant, one thread per task, caches in ``folder``, ``tests/`` importable for ``helpers`` callbacks."""
    inherited = ("SLURM_", "SBATCH_", "SRUN_", "PL_", "BERTCLS_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(inherited)}
    env.pop("VIRTUAL_ENV", None)
    if sys.prefix != sys.base_prefix:
        env["BERTCLS_VENV"] = sys.prefix
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "tests"), env.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        "BERTCLS_ACCELERATOR": "cpu",
        "BERTCLS_SHARED": str(folder / "shared"),
        "BERTCLS_CACHE": str(folder / "cache"),
    }
    return env | extra


def submit(script: str, options: list[str], args: list[object], cwd: Path, env: dict[str, str]) -> str:
    command = ["sbatch", "--parsable", *options, str(SLURM / script), *map(str, args)]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}"
    return result.stdout.strip().split(";")[0]


def job_records(job: str) -> list[dict[str, str]]:
    """``scontrol show job``, one dict per job (an array job: one per task). Finished jobs stay for 300 s."""
    shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=30)
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in shown.stdout.splitlines() if line.strip()]


def in_queue(job: str) -> bool:
    queued = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True, timeout=30)
    return bool(queued.stdout.strip())


def logs(cwd: Path) -> str:
    """Every job log in ``cwd``, named, for failure messages."""
    parts = [f"--- {path.name}:\n{path.read_text(errors='replace')[-4000:]}" for path in sorted(cwd.glob("*.out"))]
    parts += [f"--- {path.name}:\n{path.read_text(errors='replace')[-4000:]}" for path in sorted(cwd.glob("*.err"))]
    return "\n".join(parts) or "(no job output files)"


def fail_if_stuck(job: str) -> None:
    """Fail at once when the job waits for something that never comes: more than the cluster has, or a hold."""
    stuck = [record for record in job_records(job) if record.get("Reason", "").startswith(NEVER_RUNS)]
    if stuck:
        subprocess.run(["scancel", job], capture_output=True)
        nodes = subprocess.run(["sinfo", "-N", "-l"], capture_output=True, text=True).stdout
        pytest.fail(f"job {job} cannot run on this cluster (Reason={stuck[0]['Reason']}); cancelled. Nodes:\n{nodes}")


def wait_until_done(job: str, cwd: Path, timeout: float) -> list[dict[str, str]]:
    """Poll ``squeue`` until the job (every task of an array) has left the queue; then it must have COMPLETED."""
    deadline = time.monotonic() + timeout
    while in_queue(job):
        fail_if_stuck(job)
        if time.monotonic() > deadline:
            states = [f"{record.get('JobState')} ({record.get('Reason')})" for record in job_records(job)]
            subprocess.run(["scancel", job], capture_output=True)
            pytest.fail(
                f"job {job} still queued or running after {timeout:.0f} s (states {states}); cancelled.\n{logs(cwd)}"
            )
        time.sleep(0.5)
    records = job_records(job)
    states = [(record.get("JobId"), record.get("JobState"), record.get("ExitCode")) for record in records]
    assert records and all(record.get("JobState") == "COMPLETED" for record in records), f"{states}\n{logs(cwd)}"
    return records


def fit_args(model: Path, train: Path, dev: Path, epochs: int, *extra: object) -> list[object]:
    return [
        "--config", CONFIGS / "quickstart.yaml", "--model.model_name", model, "--model.learning_rate", "1e-3",
        "--data.train_file", train, "--data.validation_file", dev, "--data.where", "null",
        "--data.max_length", "32", "--data.batch_size", BATCH_SIZE, "--trainer.max_epochs", epochs,
        "--trainer.enable_progress_bar", "false", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, real_words: list[str]) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("slurm-data")
    return SimpleNamespace(
        small=write_frame(separable_frame(real_words, 96, seed=1), folder / "small.csv"),
        long=write_frame(separable_frame(real_words, 1600, seed=3), folder / "long.csv"),
        dev=write_frame(separable_frame(real_words, 40, seed=2), folder / "dev.csv"),
    )


def last_checkpoint(run_folder: Path) -> dict:
    return torch.load(run_folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


# --- the tests -----------------------------------------------------------------------------------------------
def test_two_rank_ddp_job_trains_with_both_ranks_in_step(
    slurm_cluster: None, tmp_path: Path, tiny_model_dir: Path, data: SimpleNamespace
) -> None:
    records = tmp_path / "records"
    env = job_environment(tmp_path, BERTCLS_TEST_RECORD_DIR=str(records))
    args = fit_args(tiny_model_dir, data.small, data.dev, 2, "--trainer.callbacks+=helpers.RecordRank")
    job = submit("train.sbatch", ["--job-name=test-ddp", "--ntasks-per-node=2", *CPU_TASKS], args, tmp_path, env)
    wait_until_done(job, tmp_path, timeout=180)

    output = (tmp_path / f"test-ddp-{job}.out").read_text() + (tmp_path / f"test-ddp-{job}.err").read_text()
    assert "distributed_backend=gloo" in output and "Starting with 2 processes" in output, logs(tmp_path)
    ranks = [torch.load(records / f"fit-rank{rank}.pt", weights_only=True) for rank in range(2)]
    assert sorted(path.name for path in records.iterdir()) == ["fit-rank0.pt", "fit-rank1.pt"]
    assert [rank["world_size"] for rank in ranks] == [2, 2]
    assert ranks[0]["state_dict"].keys() == ranks[1]["state_dict"].keys()
    for name, tensor in ranks[0]["state_dict"].items():
        assert torch.equal(tensor, ranks[1]["state_dict"][name]), f"ranks disagree on {name}"
    # Both ranks trained on their own shard: together, every training row once per epoch.
    rows = [sorted(row for batch in rank["epochs"][0] for row in batch) for rank in ranks]
    assert sorted(rows[0] + rows[1]) == list(range(96))

    run_folder = tmp_path / "checkpoints" / "quickstart" / f"slurm-{job}"
    assert [path.name for path in run_folder.parent.iterdir()] == [run_folder.name]
    checkpoint = last_checkpoint(run_folder)
    assert checkpoint["global_step"] == 2 * math.ceil(96 / (2 * BATCH_SIZE))
    for name, tensor in checkpoint["state_dict"].items():
        assert torch.equal(tensor, ranks[0]["state_dict"][name]), f"last.ckpt differs from the ranks on {name}"


def test_sigusr1_checkpoints_requeues_and_the_job_resumes_where_it_stopped(
    slurm_cluster: None, tmp_path: Path, tiny_model_dir: Path, data: SimpleNamespace
) -> None:
    """``scancel --signal=USR1 JOB`` reaches the srun tasks, as ``--signal=SIGUSR1@90`` does before the time limit.
    ``last.ckpt`` every 50 steps tells the test that training is under way; the signal comes after that, so the
    state resumed from is the one the signal saved (mid-epoch, unless the machine is very fast)."""
    epochs, save_every = 3, 50
    steps_per_epoch = math.ceil(1600 / (2 * BATCH_SIZE))  # 100
    callbacks = yaml.safe_load((CONFIGS / "callbacks" / "default.yaml").read_text())
    for callback in callbacks:
        if callback["class_path"].endswith("LastCheckpoint"):
            callback["init_args"]["every_n_train_steps"] = save_every
    (tmp_path / "callbacks.yaml").write_text(yaml.safe_dump(callbacks))
    args = fit_args(tiny_model_dir, data.long, data.dev, epochs, "--trainer.callbacks", tmp_path / "callbacks.yaml")
    args += ["--trainer.logger", CONFIGS / "logger" / "wandb.yaml"]  # offline: slurm/env.sh sets WANDB_MODE
    options = ["--job-name=test-requeue", "--ntasks-per-node=2", *CPU_TASKS]
    job = submit("train.sbatch", options, [*args, "--experiment", "preempted"], tmp_path, job_environment(tmp_path))

    run_folder = tmp_path / "checkpoints" / "preempted" / f"slurm-{job}"
    deadline = time.monotonic() + 120
    while not (run_folder / "checkpoints" / "last.ckpt").exists():
        fail_if_stuck(job)
        if not in_queue(job) or time.monotonic() > deadline:
            subprocess.run(["scancel", job], capture_output=True)
            pytest.fail(f"job {job} wrote no last.ckpt (every {save_every} steps) in time:\n{logs(tmp_path)}")
        time.sleep(0.1)
    signalled = subprocess.run(["scancel", "--signal=USR1", job], capture_output=True, text=True)
    assert signalled.returncode == 0, signalled.stderr
    (record,) = wait_until_done(job, tmp_path, timeout=240)

    out = (tmp_path / f"test-requeue-{job}.out").read_text()
    err = (tmp_path / f"test-requeue-{job}.err").read_text()
    assert record["Restarts"] == "1", record
    # --open-mode=append: the log holds both runs.
    assert f"job {job} (restart 0)" in out and f"job {job} (restart 1)" in out, logs(tmp_path)
    saved = re.search(rf"SIGUSR1: saved (\S+) at step (\d+); requeued SLURM job {job}\b", err)
    assert saved, logs(tmp_path)
    stopped_at = int(saved.group(2))
    assert save_every < stopped_at < epochs * steps_per_epoch, f"signal handled at step {stopped_at}, not mid-run"
    assert f"Resuming from checkpoints/preempted/slurm-{job}/checkpoints/last.ckpt" in err, logs(tmp_path)

    # One run folder, finished after exactly the uninterrupted run's optimizer steps.
    assert [path.name for path in run_folder.parent.iterdir()] == [run_folder.name]
    final = last_checkpoint(run_folder)
    assert final["global_step"] == epochs * steps_per_epoch
    assert f"optimizer steps: {epochs * steps_per_epoch}" in out  # the end-of-fit summary of the second run
    # metrics.csv continued: the training loss of every 20th step (log_every_n_steps), before the signal and
    # after the restart, each logged once.
    with (run_folder / "metrics.csv").open(newline="") as file:
        logged = [int(row["step"]) for row in csv.DictReader(file) if row.get("train/loss")]
    assert logged == [step for step in range(epochs * steps_per_epoch) if (step + 1) % 20 == 0]
    assert min(logged) < stopped_at < max(logged)
    # The requeued job continued the same W&B run: two offline segments with one id, the first marked preempted,
    # holding between them the steps of metrics.csv, each once.
    first, second = offline_runs(run_folder / "wandb")
    assert first.run_id == second.run_id == (run_folder / "wandb-run-id").read_text().strip()
    assert first.preempting and not second.preempting
    steps = [int(row["trainer/global_step"]) for run in (first, second) for row in run.history if "train/loss" in row]
    assert steps == logged


def test_job_array_runs_one_sweep_line_per_task_each_in_its_own_folder(
    slurm_cluster: None, tmp_path: Path, tiny_model_dir: Path, data: SimpleNamespace
) -> None:
    learning_rates = ["0.001", "0.0005", "0.0002"]
    sweep = tmp_path / "lr.txt"
    sweep.write_text("# three learning rates\n\n" + "".join(f"--model.learning_rate {lr}\n" for lr in learning_rates))
    env = job_environment(tmp_path, BERTCLS_SWEEP=str(sweep))
    options = ["--job-name=test-sweep", "--array=1-3", "--ntasks-per-node=1", *CPU_TASKS]
    job = submit("sweep-array.sbatch", options, fit_args(tiny_model_dir, data.small, data.dev, 1), tmp_path, env)
    records = wait_until_done(job, tmp_path, timeout=240)
    assert sorted(record["ArrayTaskId"] for record in records) == ["1", "2", "3"]

    experiment = tmp_path / "checkpoints" / f"sweep-lr-{job}"
    assert sorted(path.name for path in experiment.iterdir()) == [f"slurm-{job}_{task}" for task in (1, 2, 3)]
    for task, learning_rate in enumerate(learning_rates, start=1):
        run_folder = experiment / f"slurm-{job}_{task}"
        config = yaml.safe_load((run_folder / "config.yaml").read_text())
        assert config["model"]["learning_rate"] == float(learning_rate), run_folder
        assert config["experiment"] == experiment.name
        assert last_checkpoint(run_folder)["global_step"] == math.ceil(96 / BATCH_SIZE)
        out = (tmp_path / f"test-sweep-{job}_{task}.out").read_text()
        assert f"sweep line: --model.learning_rate {learning_rate}" in out


# --- the srun line of every script ---------------------------------------------------------------------------
# A stand-in for srun, first on the job's PATH: it writes down the options the script gives srun and the program,
# then runs the real srun with those options on a probe that writes each task's environment, not the program.
SRUN_SHIM = """#!/bin/bash
options=()
while [ "$#" -gt 0 ] && [[ $1 == -* ]]; do options+=("$1"); shift; done
printf '%s\\n' "${options[@]}" >"$SRUN_PROBE/options"
printf '%s\\n' "$@" >"$SRUN_PROBE/program"
exec REAL_SRUN "${options[@]}" bash -c 'env >"$SRUN_PROBE/task-$SLURM_PROCID.env"'
"""
SCRIPT_ARGS = {
    "train.sbatch": ([], ["--config", "my-run.yaml"]),
    "train-multinode.sbatch": (["--nodes=1"], ["--config", "my-run.yaml"]),
    "train-deepspeed.sbatch": ([], []),
    "sweep-array.sbatch": (["--array=1"], ["--config", "my-run.yaml"]),
    "sweep-agent.sbatch": (["--array=1"], ["my-team/bertcls/abc123de"]),
}


def probe_srun(script: str, options: list[str], tmp_path: Path) -> SimpleNamespace:
    """Submit ``script`` with srun replaced by the probe; what srun got, and each task's environment."""
    probe = tmp_path / "probe"
    shim = tmp_path / "shim"
    probe.mkdir()
    shim.mkdir()
    (shim / "srun").write_text(SRUN_SHIM.replace("REAL_SRUN", shutil.which("srun") or "srun"))
    (shim / "srun").chmod(0o755)
    (tmp_path / "sweep.txt").write_text("--model.learning_rate 1e-3\n")
    env = job_environment(tmp_path, SRUN_PROBE=str(probe), BERTCLS_SWEEP=str(tmp_path / "sweep.txt"))
    env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    script_options, args = SCRIPT_ARGS[script]
    job = submit(script, [f"--job-name=probe-{script}", *script_options, *options], args, tmp_path, env)
    wait_until_done(job, tmp_path, timeout=120)
    tasks = [dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
             for path in sorted(probe.glob("task-*.env"))]  # fmt: skip
    return SimpleNamespace(
        options=(probe / "options").read_text().split(),
        program=(probe / "program").read_text().split("\n")[:-1],
        tasks=tasks,
    )


@pytest.mark.parametrize("script", sorted(SCRIPT_ARGS))
def test_every_scripts_srun_passes_the_jobs_cpus_per_task(slurm_cluster: None, tmp_path: Path, script: str) -> None:
    options = ["--gpus-per-node=0", "--ntasks-per-node=1", "--cpus-per-task=2", "--mem=1G", "--time=5"]
    srun = probe_srun(script, options, tmp_path)
    assert srun.options == ["--cpus-per-task=2"], srun.options  # no GPUs: no --gpu-bind
    assert [task["SLURM_CPUS_PER_TASK"] for task in srun.tasks] == ["2"]
    if script == "sweep-agent.sbatch":
        assert srun.program[:2] == ["wandb", "agent"], srun.program
    else:
        assert srun.program[:4] == ["python", "-m", "bertcls", "fit"], srun.program
        assert srun.program[-6:] == ["--trainer.accelerator", "cpu", "--trainer.num_nodes", "1",
                                     "--trainer.devices", "1"]  # fmt: skip


def cluster_gpus() -> int:
    gres = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"gpu:(?:\w+:)?(\d+)", gres)
    return int(found.group(1)) if found else 0


def test_tasks_of_a_job_bound_one_gpu_each_still_see_all_the_nodes_gpus(slurm_cluster: None, tmp_path: Path) -> None:
    """``--gpus-per-task=1`` makes SLURM bind each task to one GPU (CUDA_VISIBLE_DEVICES=0, =1), and Lightning's
    ``devices=2`` fails. With ``--gpu-bind=none`` no task is bound (SLURM then leaves CUDA_VISIBLE_DEVICES unset:
    the node's device cgroup decides what a task sees)."""
    if cluster_gpus() < 2:
        pytest.skip("the running SLURM cluster has fewer than 2 (fake) GPUs: start it with SLURM_LOCAL_GPUS=2")
    options = ["--gpus-per-node=2", "--gpus-per-task=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=5"]
    srun = probe_srun("train.sbatch", [*options, "--mem=1G"], tmp_path)
    assert srun.options == ["--cpus-per-task=1", "--gpu-bind=none"], srun.options
    assert len(srun.tasks) == 2
    for task in srun.tasks:
        assert task.get("SLURMD_TRES_BIND") == "gpu:none", task.get("SLURMD_TRES_BIND")
        assert task.get("CUDA_VISIBLE_DEVICES", "0,1") == "0,1", task["CUDA_VISIBLE_DEVICES"]
