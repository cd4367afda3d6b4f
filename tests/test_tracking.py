"""Experiment tracking: a real offline W&B run of the tiny model, read back with wandb's own records; the
TensorBoard logger with the same figures as the CSV; and no network use at all.

Every W&B run here has no API key, and all HTTP(S) traffic (``HTTP_PROXY``, ``HTTPS_PROXY``,
``WANDB_BASE_URL``) is pointed at a local tripwire socket that counts connection attempts: the tests prove
that nothing tries the network, rather than waiting on time-outs.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from helpers import CONFIGS, REPO_ROOT, run_bertcls_process, separable_frame, write_frame
from wandb_files import OfflineRun, offline_runs

from bertcls.loggers.wandb_run import RUN_ID_FILE, api_key_configured, choose_mode

LABELS = ("pos", "neg", "neutral")
SIGNAL_AT_STEP = 9  # SIGUSR1 (SLURM's warning before the time limit) in the first epoch: save, stop, resume


class Tripwire:
    """A local TCP server that accepts and counts every connection made to it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def environment(self) -> dict[str, str]:
        proxies = {name: self.url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
        return proxies | {"WANDB_BASE_URL": self.url, "NO_PROXY": "", "no_proxy": ""}


@pytest.fixture(scope="module")
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire()
    yield wire
    wire.server.close()


def logger_config(folder: Path, base: str, **changes: object) -> Path:
    """A copy of ``configs/logger/<base>.yaml`` with some of the last logger's ``init_args`` changed."""
    loggers = yaml.safe_load((CONFIGS / "logger" / f"{base}.yaml").read_text())
    loggers[-1]["init_args"].update(changes)
    path = folder / f"logger-{base}.yaml"
    path.write_text(yaml.safe_dump(loggers))
    return path


def fit_command(folder: Path, model_dir: Path, logger: Path, experiment: str, *extra: object) -> list[object]:
    # Mean pooling: the tiny random encoder learns the separable data in two epochs that way; its [CLS] does not.
    return [
        "fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", model_dir, "--model.pooling", "mean",
        "--model.learning_rate", "3e-3", "--data.train_file", folder / "train.csv",
        "--data.validation_file", folder / "dev.csv", "--data.where", "null", "--data.max_length", "32",
        "--data.batch_size", "16", "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "3",
        "--trainer.enable_progress_bar", "false", "--trainer.logger", logger, "--experiment", experiment, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, real_words: list[str]) -> Path:
    folder = tmp_path_factory.mktemp("tracking")
    write_frame(separable_frame(real_words, 300, seed=1, labels=LABELS), folder / "train.csv")
    write_frame(separable_frame(real_words, 90, seed=2, labels=LABELS), folder / "dev.csv")
    write_frame(separable_frame(real_words, 90, seed=3, labels=LABELS), folder / "test.csv")
    return folder


@pytest.fixture(scope="module")
def wandb_run(data: Path, tiny_model_dir: Path, tripwire: Tripwire) -> SimpleNamespace:
    """``fit`` stopped by SIGUSR1 at step 9 (as before a SLURM time limit), ``fit --ckpt_path last`` to the end,
    then ``test`` of the best checkpoint: three processes, one run folder, one W&B run (offline, no API key)."""
    logger = logger_config(data, "wandb", log_model=True, tags=["ci"])
    env = {"BERTCLS_CACHE": str(data / "cache")} | tripwire.environment()
    fit = fit_command(data, tiny_model_dir, logger, "tracked")
    stop = {"BERTCLS_TEST_SIGNAL": "SIGUSR1", "BERTCLS_TEST_SIGNAL_AT_STEP": str(SIGNAL_AT_STEP)}
    stopped = run_bertcls_process(*fit, "--trainer.callbacks+=helpers.SignalAtStep", cwd=data, env=env | stop)
    assert stopped.returncode == 0, stopped.stderr[-4000:]
    resumed = run_bertcls_process(*fit, "--ckpt_path", "last", cwd=data, env=env)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    folder = data / "checkpoints" / "tracked" / "version_0"
    (best,) = (folder / "checkpoints").glob("best-*.ckpt")
    test = ["test", "--ckpt_path", best, "--data.test_file", data / "test.csv", "--trainer.logger", logger]
    tested = run_bertcls_process(*test, "--trainer.enable_progress_bar", "false", cwd=data, env=env)
    assert tested.returncode == 0, tested.stderr[-4000:]
    return SimpleNamespace(
        folder=folder,
        best=best,
        runs=offline_runs(folder / "wandb"),
        metrics=pd.read_csv(folder / "metrics.csv"),
        output=stopped.stderr + resumed.stderr + tested.stderr,
    )


def test_one_wandb_run_per_run_folder_across_preemption_resume_and_test(wandb_run: SimpleNamespace) -> None:
    runs = wandb_run.runs
    assert len(runs) == 3  # fit until SIGUSR1, the resumed fit, test: offline segments of one W&B run
    run_id = (wandb_run.folder / RUN_ID_FILE).read_text().strip()
    assert {run.run_id for run in runs} == {run_id}
    assert {run.display_name for run in runs} == {"tracked/version_0"}
    assert {run.group for run in runs} == {"tracked"}  # the experiment name
    assert {run.project for run in runs} == {"bertcls"}
    assert all(run.tags == ["ci"] for run in runs)
    assert "W&B: offline (no W&B API key" in wandb_run.output  # said once per process, with the sync command
    assert "wandb sync" in wandb_run.output


def test_history_holds_the_training_figures_of_the_csv_log(wandb_run: SimpleNamespace) -> None:
    first, resumed, _ = wandb_run.runs
    steps = [step for run in (first, resumed) for step in steps_of(run, "train/loss")]
    # The first process stopped at step 9; the resumed one went on from there, replaying no step.
    assert max(steps_of(first, "train/loss")) <= SIGNAL_AT_STEP < min(steps_of(resumed, "train/loss"))
    csv = wandb_run.metrics.dropna(subset=["train/loss"])
    assert steps == [int(step) for step in csv["step"]]
    wandb_losses = [value for run in (first, resumed) for value in run.values("train/loss")]
    assert wandb_losses == pytest.approx(csv["train/loss"].tolist(), rel=1e-6)
    for key in ("train/grad_norm", "speed/samples_per_sec", "speed/tokens_per_sec", "speed/padding_efficiency"):
        values = resumed.values(key)
        assert values and all(value > 0 for value in values), key
    assert all(0 < value <= 1 for value in resumed.values("speed/padding_efficiency"))
    assert any(key.startswith("lr-") for row in resumed.history for key in row)
    # Per-epoch validation metrics, as in metrics.csv.
    csv_accuracy = wandb_run.metrics.dropna(subset=["val/accuracy"])["val/accuracy"].tolist()
    wandb_accuracy = [value for run in (first, resumed) for value in run.values("val/accuracy")]
    assert wandb_accuracy == pytest.approx(csv_accuracy, rel=1e-6)
    assert len(wandb_accuracy) == 2 and wandb_accuracy[-1] > 0.8
    assert resumed.summary["val/accuracy"] == pytest.approx(csv_accuracy[-1], rel=1e-6)


def steps_of(run: OfflineRun, key: str) -> list[int]:
    return [int(row["trainer/global_step"]) for row in run.history if key in row]


def test_config_holds_the_resolved_config_code_packages_and_hardware(wandb_run: SimpleNamespace) -> None:
    config = wandb_run.runs[1].config
    assert config["command"] == "fit"
    assert config["config"]["trainer"]["max_epochs"] == 2
    assert config["config"]["data"]["batch_size"] == 16
    assert config["config"]["experiment"] == "tracked"
    assert config["learning_rate"] == pytest.approx(3e-3)  # the model's hyper-parameters, at the top level
    run = config["run"]
    assert run["packages"]["torch"] and run["packages"]["lightning"] and run["packages"]["wandb"]
    assert run["hardware"]["world_size"] == 1 and run["hardware"]["num_nodes"] == 1
    assert run["hardware"]["accelerator"] == "CPUAccelerator"
    assert (REPO_ROOT / ".git").exists() == (run["code"]["git_commit"] is not None)
    if run["code"]["git_commit"]:
        assert len(run["code"]["git_commit"]) == 40 and isinstance(run["code"]["git_dirty"], bool)
    assert yaml.safe_load((wandb_run.folder / "run_info.yaml").read_text())["hardware"] == run["hardware"]
    assert wandb_run.runs[2].config["command"] == "test"


def test_best_checkpoint_is_a_model_artifact(wandb_run: SimpleNamespace) -> None:
    models = [artifact for run in wandb_run.runs for artifact in run.artifacts if artifact.type == "model"]
    assert len(models) == 1  # logged once, by the fit that ended, not by the preempted one
    (model,) = models
    assert "best" in model.aliases
    (entry,) = model.manifest.contents
    assert entry.path == "model.ckpt"
    assert entry.size == wandb_run.best.stat().st_size
    metadata = json.loads(model.metadata)
    assert metadata["original_filename"] == wandb_run.best.name
    assert metadata["BestCheckpoint"]["monitor"] == "val/accuracy"
    best_accuracy = wandb_run.metrics["val/accuracy"].max()
    assert metadata["score"] == pytest.approx(best_accuracy, rel=1e-6)


def test_test_report_table_and_plots_reach_wandb(wandb_run: SimpleNamespace) -> None:
    tested = wandb_run.runs[2]
    (row,) = [row for row in tested.history if "test/accuracy" in row]
    assert row["test/accuracy"] > 0.8
    keys = {key for row in tested.history for key in row}
    assert "test/report/_type" in keys
    tables = [artifact for artifact in tested.artifacts if artifact.type == "run_table"]
    assert tables, "the report table is stored as a run_table artifact"
    assert any(key.startswith("test/confusion_matrix") for key in keys)
    assert any(key.startswith("test/plots/") for key in keys)
    assert (wandb_run.folder / "test_confusion_matrix.png").is_file()  # also next to the checkpoints


def test_nothing_tried_the_network(wandb_run: SimpleNamespace, tripwire: Tripwire) -> None:
    assert tripwire.connections == 0


def test_preempted_segment_is_marked_preempting(wandb_run: SimpleNamespace) -> None:
    first = wandb_run.runs[0]
    # The requeue path told W&B (a `preempting` record); the two later segments ended normally.
    assert first.preempting and not any(run.preempting for run in wandb_run.runs[1:])


# --- choosing the mode -------------------------------------------------------------------------------
def test_without_an_api_key_the_run_is_offline_without_any_connection(
    tripwire: Tripwire, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = tripwire.connections
    for name, value in tripwire.environment().items():
        monkeypatch.setenv(name, value)
    assert choose_mode("auto", connect_timeout=5.0)[0] == "offline"
    assert tripwire.connections == before


@contextmanager
def http_server(answer: bool) -> Iterator[str]:
    """A local HTTP server that answers every request with 200, or one that accepts connections and then says
    nothing (as a firewall that accepts and drops)."""
    if answer:

        class Answer(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
    else:
        silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody ever reads or replies
        try:
            yield f"http://127.0.0.1:{silent.getsockname()[1]}"
        finally:
            silent.close()


def test_with_an_api_key_and_a_silent_server_the_run_is_offline_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    with http_server(answer=False) as url:
        monkeypatch.setenv("WANDB_BASE_URL", url)
        started = time.perf_counter()
        mode, reason = choose_mode("auto", connect_timeout=1.0)
        assert mode == "offline" and url in reason
        assert time.perf_counter() - started < 2.5  # gives up after its own timeout


def test_with_an_api_key_and_an_answering_server_the_run_is_online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    with http_server(answer=True) as url:
        monkeypatch.setenv("WANDB_BASE_URL", url)
        assert choose_mode("auto", connect_timeout=5.0)[0] == "online"
        monkeypatch.setenv("WANDB_MODE", "offline")  # the variable wins over detection
        assert choose_mode("auto", connect_timeout=5.0) == ("offline", "WANDB_MODE")


def test_netrc_entry_from_wandb_login_counts_as_an_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert api_key_configured("https://api.wandb.ai")
    assert not api_key_configured("https://wandb.example.org")


# --- TensorBoard and the sync helper ------------------------------------------------------------------
def test_tensorboard_logger_gets_the_csv_figures(data: Path, tiny_model_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = CONFIGS / "logger" / "tensorboard.yaml"
    fit = fit_command(data, tiny_model_dir, logger, "tensorboard")
    done = run_bertcls_process(*fit, cwd=data, env={"BERTCLS_CACHE": str(data / "cache")})
    assert done.returncode == 0, done.stderr[-4000:]
    folder = data / "checkpoints" / "tensorboard" / "version_0"
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    csv = pd.read_csv(folder / "metrics.csv")
    for key in ("train/loss", "val/accuracy"):
        logged = csv.dropna(subset=[key])
        scalars = events.Scalars(key)
        assert [event.step for event in scalars] == [int(step) for step in logged["step"]]
        assert [event.value for event in scalars] == pytest.approx(logged[key].tolist(), rel=1e-6)
    assert "speed/tokens_per_sec" in events.Tags()["scalars"]
    assert (folder / "checkpoints" / "last.ckpt").is_file()  # one run folder for both loggers


def test_sync_script_finds_every_offline_segment(wandb_run: SimpleNamespace, tripwire: Tripwire) -> None:
    before = tripwire.connections
    env = os.environ | tripwire.environment()
    root = wandb_run.folder.parents[1]
    done = subprocess.run(
        ["bash", REPO_ROOT / "slurm" / "wandb-sync.sh", root, "--", "--dry-run"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = [line for line in (done.stdout + done.stderr).splitlines() if line.strip().endswith(".wandb")]
    assert len(listed) == 3
    assert tripwire.connections == before


def test_api_keys_and_tokens_reach_no_file_log_or_wandb_record(
    data: Path, tiny_model_dir: Path, tripwire: Tripwire
) -> None:
    """With a W&B API key and a Hugging Face token in the environment (as on a cluster), a fit writes neither into
    the run folder (config.yaml, run_info.yaml, metrics, checkpoints, the offline W&B run files) nor its output."""
    secrets = {"WANDB_API_KEY": "bertclstestsecret" + "0" * 23, "HF_TOKEN": "hf_bertclstesttoken0000000000000000"}
    logger = logger_config(data, "wandb")
    env = {"BERTCLS_CACHE": str(data / "cache"), "WANDB_MODE": "offline"} | tripwire.environment() | secrets
    fit = fit_command(data, tiny_model_dir, logger, "secrets", "--trainer.max_epochs", "1")
    result = run_bertcls_process(*fit, cwd=data, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    folder = data / "checkpoints" / "secrets" / "version_0"
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert any(path.suffix == ".wandb" for path in files) and any(path.suffix == ".ckpt" for path in files)
    for secret in secrets.values():
        assert secret not in result.stdout + result.stderr
        leaks = [path for path in files if secret.encode() in path.read_bytes()]
        assert not leaks, f"{secret[:8]}... written to {leaks}"
