"""Hyper-parameter sweeps: the W&B sweep definitions in configs/sweeps/, `bertcls sweep-lines` (their offline
expansion for slurm/sweep-array.sbatch) and slurm/sweep-agent.sbatch (a job array of W&B agents).

- Every definition is one that W&B and bertcls can run: its keys, method, metric and goal, each parameter's
  form, a command that runs `bertcls fit` on an existing benchmark config with the W&B logger and `${args}`, and
  a metric that bertcls logs for that benchmark's task.
- Every parameter name and value reaches the real `bertcls fit` parser: the benchmark config plus one expanded
  line, and the same values in the agent's `--name=value` form, through `--print_config` in-process (nothing is
  trained); the printed config holds the values.
- sweep-lines: a grid is the cartesian product, random draws are seeded and within their bounds (log-uniform on
  a log scale), and unsupported forms are refused with a message naming the parameter and the fix.
- sweep-agent.sbatch, run with bash and SLURM's variables, calls `wandb agent` (a recording fake first on the
  PATH) with the sweep id and WANDB_MODE=online, and moves an interrupted run's folder aside after a requeue.

wandb 0.31 ships no sweep-config schema or validator: `wandb.controller` imports them from the optional `sweeps`
package (`pip install wandb[sweeps]`, config/schema.json), which pins numpy < 2 and so cannot be installed beside
this project. `check_definition` follows that schema's rules for what it checks (top-level keys, methods,
parameter forms and their keys); the W&B server validates the whole definition again at `wandb sweep`.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import CONFIGS, REPO_ROOT

from bertcls.commands.sweep_lines import fixed_arguments, format_line
from bertcls.errors import InputError
from bertcls.sweep_definition import check_definition, expand, load_definition
from bertcls.tasks import TASKS

SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))
SWEPT = {"model.learning_rate", "data.batch_size", "model.warmup_ratio", "model.layerwise_lr_decay"}
AGENT_SCRIPT = REPO_ROOT / "slurm" / "sweep-agent.sbatch"


def sweep_id(path: Path) -> str:
    return path.name


def write_definition(folder: Path, parameters: dict[str, Any], method: str = "random", **extra: Any) -> Path:
    definition = {
        "method": method,
        "metric": {"name": "val/accuracy", "goal": "maximize"},
        "parameters": parameters,
        "command": ["bertcls", "fit", "--config", "configs/benchmarks/rte-minilm.yaml", "${args}"],
        **extra,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path


def data_lines(text: str) -> list[str]:
    """The lines sweep-array.sbatch counts: not blank, not comments."""
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def pairs(line: str) -> dict[str, str]:
    """A line split as sweep-array.sbatch splits it (shell words), as {name: value}."""
    words = shlex.split(line)
    assert len(words) % 2 == 0 and all(name.startswith("--") for name in words[::2]), line
    return {name[2:]: value for name, value in zip(words[::2], words[1::2], strict=True)}


# --- the definitions -------------------------------------------------------------------------------------------
def test_sweep_definitions_are_found() -> None:
    names = {path.name for path in SWEEPS}
    assert "rte-minilm.yaml" in names
    assert any("bert-base" in name for name in names), names


@pytest.mark.parametrize("path", SWEEPS, ids=sweep_id)
def test_sweep_definition_is_valid(path: Path) -> None:
    definition = load_definition(path)
    parameters = check_definition(definition, str(path))
    assert {"method", "metric", "parameters", "command"} <= set(definition)
    assert definition["metric"]["goal"] == "maximize"  # accuracy and F1
    assert set(parameters) == SWEPT
    command = definition["command"]
    assert command[:2] == ["bertcls", "fit"] and command[-1] == "${args}"
    arguments = fixed_arguments(definition)
    options = dict(zip(arguments[::2], arguments[1::2], strict=True))
    assert options["--trainer.logger"] == "configs/logger/wandb.yaml"
    benchmark = REPO_ROOT / options["--config"]
    assert benchmark.parent == CONFIGS / "benchmarks" and benchmark.is_file(), benchmark
    assert "Devlin et al. 2019" in path.read_text()  # the search ranges cite their source
    if definition["method"] == "grid":  # W&B runs every combination, sweep-lines lists every one
        assert len(expand(parameters, "grid", None, 0)) == math.prod(
            len(definition["parameters"][name].get("values", [None])) for name in parameters
        )


@pytest.mark.parametrize("path", SWEEPS, ids=sweep_id)
def test_sweep_values_parse_with_bertcls_fit(
    path: Path, cli, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmark config plus an expanded line, and the agent's `--name=value` form of another, through the real
    `bertcls fit` parser; the metric is the one bertcls logs for the benchmark's task."""
    monkeypatch.chdir(REPO_ROOT)  # the sweep's command names its files from the checkout's root, as agents run it
    definition = load_definition(path)
    parameters = check_definition(definition, str(path))
    runs = expand(parameters, definition["method"], 3, seed=0)
    fixed = fixed_arguments(definition)
    # sweep-lines' line (`--name value`, shell words) and W&B's ${args} (`--name=value`, Python's str of the value)
    forms = [shlex.split(format_line(runs[0])), [f"--{name}={value}" for name, value in runs[-1].items()]]
    for run, arguments in zip([runs[0], runs[-1]], forms, strict=True):
        exit_ = cli("fit", *fixed, *arguments, "--print_config")
        output = capsys.readouterr().out
        assert exit_ is not None and exit_.code in (0, None), f"{path.name} {arguments}: {exit_}"
        resolved = yaml.safe_load(output)
        for name, value in run.items():
            section, key = name.split(".")
            assert resolved[section][key] == pytest.approx(value), (name, arguments)
        task = resolved["data"]["task"]
        assert definition["metric"]["name"] == TASKS[task].monitor, f"{path.name}: a {task} benchmark"


def test_a_misspelled_parameter_fails_the_parse(cli, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    """What the test above would catch: a name `bertcls fit` does not know stops the parse."""
    monkeypatch.chdir(REPO_ROOT)
    exit_ = cli("fit", "--config", "configs/benchmarks/rte-minilm.yaml", "--model.learnig_rate=1e-05", "--print_config")
    assert exit_ is not None and exit_.code not in (0, None)
    assert "learnig_rate" in capsys.readouterr().err


# --- sweep-lines ----------------------------------------------------------------------------------------------
def test_grid_is_the_cartesian_product(tmp_path: Path, cli, capsys: pytest.CaptureFixture[str]) -> None:
    parameters = {
        "model.learning_rate": {"values": [5.0e-5, 3.0e-5, 2.0e-5]},
        "data.batch_size": {"values": [16, 32]},
        "model.warmup_ratio": {"value": 0.1},
        "trainer.max_epochs": {"distribution": "int_uniform", "min": 2, "max": 4},
        "model.layerwise_lr_decay": {"distribution": "q_uniform", "min": 0.8, "max": 1.0, "q": 0.1},
    }
    path = write_definition(tmp_path, parameters, method="grid")
    assert cli("sweep-lines", path) is None
    lines = data_lines(capsys.readouterr().out)
    # int_uniform: 2, 3, 4; q_uniform as W&B's grid enumerates it (numpy.arange: 0.8, 0.9, max left out)
    assert len(lines) == 3 * 2 * 1 * 3 * 2
    runs = [pairs(line) for line in lines]
    assert len({tuple(run.items()) for run in runs}) == len(runs)
    assert {run["trainer.max_epochs"] for run in runs} == {"2", "3", "4"}
    assert {run["model.layerwise_lr_decay"] for run in runs} == {"0.8", "0.9"}
    assert {run["model.warmup_ratio"] for run in runs} == {"0.1"}
    assert cli("sweep-lines", path, "--count", "5") is None  # --count caps a grid, as run_cap does
    assert len(data_lines(capsys.readouterr().out)) == 5


def test_random_draws_are_seeded_and_within_bounds(tmp_path: Path, cli, capsys: pytest.CaptureFixture[str]) -> None:
    parameters = {
        "model.learning_rate": {"distribution": "log_uniform_values", "min": 1.0e-6, "max": 1.0e-2},
        "model.warmup_ratio": {"distribution": "uniform", "min": 0.0, "max": 0.2},
        "trainer.max_epochs": {"distribution": "int_uniform", "min": 2, "max": 4},
        "model.layerwise_lr_decay": {"distribution": "q_uniform", "min": 0.8, "max": 1.0, "q": 0.05},
        "data.eval_batch_size": {"distribution": "q_log_uniform_values", "min": 16, "max": 128, "q": 8},
        "data.batch_size": {"values": [8, 16, 32], "probabilities": [0.0, 0.5, 0.5]},
        "model.pooling": {"value": "mean"},
    }
    path = write_definition(tmp_path, parameters, method="bayes", run_cap=400)
    outputs = []
    for seed in ("3", "3", "4"):
        assert cli("sweep-lines", path, "--seed", seed, "--output", tmp_path / f"lines-{seed}.txt") is None
        outputs.append((tmp_path / f"lines-{seed}.txt").read_text())
    assert "random" in capsys.readouterr().err  # bayes cannot run offline: said, and sampled at random
    assert outputs[0] == outputs[1] and data_lines(outputs[0]) != data_lines(outputs[2])
    assert "--array=1-400" in outputs[0]  # run_cap is the default count; the header says how to submit
    runs = [pairs(line) for line in data_lines(outputs[0])]
    assert len(runs) == 400
    rates = [float(run["model.learning_rate"]) for run in runs]
    assert all(1.0e-6 <= rate <= 1.0e-2 for rate in rates)
    assert 0.35 < sum(rate < 1.0e-4 for rate in rates) / len(rates) < 0.65  # log scale: half below the middle
    assert all(0.0 <= float(run["model.warmup_ratio"]) <= 0.2 for run in runs)
    assert {run["trainer.max_epochs"] for run in runs} == {"2", "3", "4"}
    decays = {float(run["model.layerwise_lr_decay"]) for run in runs}
    assert decays <= {0.8, 0.85, 0.9, 0.95, 1.0} and len(decays) == 5
    assert all(int(run["data.eval_batch_size"]) % 8 == 0 for run in runs)  # q: 8 (an int) gives ints
    assert {run["data.batch_size"] for run in runs} == {"16", "32"}  # probability 0 never drawn
    assert {run["model.pooling"] for run in runs} == {"mean"}


def test_random_needs_a_count(tmp_path: Path, cli) -> None:
    path = write_definition(tmp_path, {"data.batch_size": {"values": [16, 32]}})
    exit_ = cli("sweep-lines", path)
    assert exit_ is not None and "--count N" in str(exit_.code)


@pytest.mark.parametrize(
    ("spec", "method", "says"),
    [
        ({"distribution": "normal", "mu": 0, "sigma": 1}, "random", "'normal' is not supported"),
        ({"distribution": "log_uniform", "min": -11.5, "max": -9.2}, "random", "log_uniform_values"),
        ({"distribution": "log_uniform_values", "min": "1e-5", "max": 1.0e-4}, "random", "write 1.0e-5"),
        ({"distribution": "uniform", "min": 0.2, "max": 0.1}, "random", "min (0.2) must be below max"),
        ({"distribution": "uniform", "min": 0.0, "max": 0.2}, "grid", "grid search cannot enumerate"),
        ({"values": [16, 32], "probabilities": [0.5, 0.5]}, "grid", "grid search cannot enumerate"),
        ({"values": [16, 32], "probabilities": [0.3, 0.3]}, "random", "add up to 1"),
        ({"parameters": {"learning_rate": {"value": 1.0e-5}}}, "random", "nested parameters"),
        ({"min": 0.1, "max": 0.2, "step": 0.1}, "random", "unexpected ['step']"),
    ],
)
def test_unsupported_forms_are_refused(tmp_path: Path, spec: dict[str, Any], method: str, says: str) -> None:
    path = write_definition(tmp_path, {"model.warmup_ratio": spec}, method=method)
    with pytest.raises(InputError, match=r"parameter model\.warmup_ratio") as error:
        check_definition(load_definition(path), str(path))
    assert says in str(error.value)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"method": "hyperopt"}, "method"),
        ({"metric": {"name": "val/accuracy"}}, "goal: maximize"),
        ({"command": ["bertcls", "fit", "--config", "x.yaml"]}, "${args}"),
        ({"early_terminate": {"type": "median"}}, "hyperband"),
        ({"parameter": {}}, "unknown keys"),
    ],
)
def test_bad_definitions_are_refused(tmp_path: Path, change: dict[str, Any], says: str) -> None:
    path = write_definition(tmp_path, {"data.batch_size": {"values": [16, 32]}}, **change)
    with pytest.raises(InputError) as error:
        check_definition(load_definition(path), str(path))
    assert says in str(error.value)


# --- sweep-agent.sbatch ---------------------------------------------------------------------------------------
@pytest.fixture
def agent_job(tmp_path: Path):
    """Run slurm/sweep-agent.sbatch with bash as array task 3 of job 77, with recording fakes of `wandb` and `srun`.

    The checkout root (BERTCLS_ROOT) is a temporary folder with slurm/env.sh, so that a requeued task's folder
    renaming happens there. Returns a function: ``run(*args, **environment) -> (process, record folder)``.
    """
    root, fakes, record = tmp_path / "root", tmp_path / "bin", tmp_path / "record"
    for folder in (root / "slurm", fakes, record):
        folder.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "slurm" / "env.sh", root / "slurm" / "env.sh")
    (fakes / "wandb").write_text(
        '#!/bin/bash\nprintf "%s\\n" "$@" > "$FAKE_RECORD/wandb-args"\nenv > "$FAKE_RECORD/wandb-env"\n'
        'pwd > "$FAKE_RECORD/wandb-cwd"\nexit "${FAKE_WANDB_STATUS:-0}"\n'
    )
    # Records its arguments; runs the command after srun's own options (--cpus-per-task=N, ...).
    fake_srun = 'printf "%s\\n" "$@" > "$FAKE_RECORD/srun-args"\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n'
    (fakes / "srun").write_text("#!/bin/bash\n" + fake_srun)
    for fake in fakes.iterdir():
        fake.chmod(0o755)

    def run(*args: str, **environment: str) -> tuple[subprocess.CompletedProcess, Path]:
        env = {
            "HOME": str(tmp_path),
            # The fakes first; then this interpreter (env.sh checks that `python` imports bertcls). No VIRTUAL_ENV:
            # env.sh would activate it and put the real wandb first on the PATH.
            "PATH": os.pathsep.join([str(fakes), str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
            "FAKE_RECORD": str(record),
            "BERTCLS_ROOT": str(root),
            "SLURM_JOB_ID": "80",
            "SLURM_ARRAY_JOB_ID": "77",
            "SLURM_ARRAY_TASK_ID": "3",
            "SLURM_SUBMIT_DIR": str(tmp_path),
            "SLURM_CPUS_PER_TASK": "2",
            "WANDB_MODE": "offline",  # as env.sh would set it: the agent must override it
            **environment,
        }
        process = subprocess.run(
            ["bash", str(AGENT_SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        return process, record

    return run


def recorded_environment(record: Path) -> dict[str, str]:
    lines = (record / "wandb-env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_agent_script_runs_one_online_wandb_agent(agent_job, tmp_path: Path) -> None:
    process, record = agent_job("my-team/bertcls/abc123de")
    assert process.returncode == 0, process.stderr
    assert (record / "wandb-args").read_text().split() == [
        "agent",
        "--forward-signals",
        "--count",
        "1",
        "my-team/bertcls/abc123de",
    ]
    srun_args = (record / "srun-args").read_text().split()
    command = srun_args.index("wandb")
    assert srun_args[command : command + 2] == ["wandb", "agent"]  # a job step: it gets SIGUSR1
    assert all(option.startswith("--") for option in srun_args[:command])  # srun's own (slurm/env.sh)
    environment = recorded_environment(record)
    assert environment["WANDB_MODE"] == "online"
    assert environment["SLURM_ARRAY_JOB_ID"] == "77" and environment["SLURM_ARRAY_TASK_ID"] == "3"
    assert Path((record / "wandb-cwd").read_text().strip()) == tmp_path / "root"  # the sweep's paths are from there
    assert "api.wandb.ai" not in process.stderr


def test_agent_script_takes_the_sweep_from_the_environment(agent_job) -> None:
    process, record = agent_job(BERTCLS_SWEEP_ID="my-team/bertcls/fromenv1")
    assert process.returncode == 0, process.stderr
    assert (record / "wandb-args").read_text().split()[-1] == "my-team/bertcls/fromenv1"


def test_agent_script_without_a_sweep_says_how_to_give_one(agent_job) -> None:
    process, record = agent_job()
    assert process.returncode == 2
    assert "ENTITY/PROJECT/SWEEP_ID" in process.stderr and "BERTCLS_SWEEP_ID" in process.stderr
    assert not (record / "wandb-args").exists()


def test_agent_script_refuses_run_options(agent_job) -> None:
    process, record = agent_job("my-team/bertcls/abc123de", "--config", "configs/benchmarks/rte-minilm.yaml")
    assert process.returncode == 2 and "from the sweep's command" in process.stderr
    assert not (record / "wandb-args").exists()


def test_agent_failure_points_to_the_offline_path(agent_job) -> None:
    process, _ = agent_job("my-team/bertcls/abc123de", FAKE_WANDB_STATUS="1")
    assert process.returncode == 1
    assert "api.wandb.ai" in process.stderr and "sweep-lines" in process.stderr


def test_requeued_agent_task_moves_the_interrupted_run_aside(agent_job, tmp_path: Path) -> None:
    """The next run would otherwise resume the interrupted one's last.ckpt (bertcls names the folder after the job)."""
    checkpoints = tmp_path / "root" / "checkpoints" / "rte-minilm"
    (checkpoints / "slurm-77_3" / "checkpoints").mkdir(parents=True)
    (checkpoints / "slurm-77_3" / "checkpoints" / "last.ckpt").write_text("interrupted")
    (checkpoints / "slurm-77_4").mkdir()  # another task's run: left alone
    process, record = agent_job("my-team/bertcls/abc123de", SLURM_RESTART_COUNT="1")
    assert process.returncode == 0, process.stderr
    assert sorted(path.name for path in checkpoints.iterdir()) == ["slurm-77_3.interrupted-1", "slurm-77_4"]
    assert (checkpoints / "slurm-77_3.interrupted-1" / "checkpoints" / "last.ckpt").read_text() == "interrupted"
    assert (record / "wandb-args").exists()
