"""Weights & Biases logging that works on compute nodes without internet.

A W&B run belongs to a bertcls run folder (``<save_dir>/<experiment>/<version>/``): wandb writes into its
``wandb/`` subfolder and the run's id is kept in its ``wandb-run-id`` file. So a resumed or requeued ``fit``,
and a later ``test`` of one of its checkpoints, continue the same W&B run rather than starting new ones.

Where W&B cannot be reached (no API key, or no answer from its server within a few seconds) the run is
written offline, without waiting on the network; ``wandb sync`` (or ``slurm/wandb-sync.sh``) uploads it later
from a machine with internet, in order, as one run.
"""

from __future__ import annotations

import http.client
import netrc
import os
import secrets
import string
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from bertcls.atomic_files import atomic_write_text

DEFAULT_BASE_URL = "https://api.wandb.ai"
RUN_ID_FILE = "wandb-run-id"
Mode = Literal["auto", "online", "offline", "disabled"]


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger``, bound to the bertcls run folder, offline when W&B is out of reach.

    Args:
        save_dir, name, version: the run folder ``save_dir/name/version``, as for the CSV logger (the CLI sets
            ``name`` from ``--experiment`` and ``version`` to the run's version). The W&B run's display name
            is ``<name>/<version>`` unless ``run_name`` is given.
        project, entity, group, tags, notes, job_type: as in ``wandb.init``; ``project`` defaults to
            ``WANDB_PROJECT``, else ``bertcls``; ``entity`` to ``WANDB_ENTITY``. ``group`` defaults to the
            experiment name, so the runs of one experiment (a sweep, a SLURM array) sit together.
        mode: ``auto``: ``WANDB_MODE`` if set; else online when an API key is configured (``WANDB_API_KEY``
            or ``wandb login``) and the W&B server (``WANDB_BASE_URL``, or the ``HTTPS_PROXY`` in between)
            answers an HTTP request within ``connect_timeout`` seconds; else offline. Or ``online``,
            ``offline``, ``disabled``.
        log_model: at the end of a successful ``fit``, log the best checkpoint as a ``model`` artifact
            (uploaded with the run; offline, at ``wandb sync``).
    """

    def __init__(
        self,
        save_dir: str = "checkpoints",
        name: str = "default",
        version: str | None = None,
        project: str | None = None,
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        notes: str | None = None,
        job_type: str | None = None,
        run_name: str | None = None,
        mode: Mode = "auto",
        log_model: bool = False,
        connect_timeout: float = 3.0,
    ) -> None:
        super().__init__(
            name=run_name,
            project=project or os.environ.get("WANDB_PROJECT", "bertcls"),
            log_model=log_model,
            entity=entity,
            group=group,
            tags=tags,
            notes=notes,
            job_type=job_type,
        )
        self._root = save_dir
        self._experiment_name = name
        self._run_version = version
        self._mode = mode
        self._connect_timeout = connect_timeout

    # The run folder's terms, as for the CSV logger: checkpoints land in the same folder whichever logger is first.
    @property
    def save_dir(self) -> str:
        return self._root

    @property
    def name(self) -> str:
        return self._experiment_name

    @property
    def version(self) -> str:
        if self._run_version is None:  # used outside the CLI: the next free version_N, as the CSV logger does
            self._run_version = f"version_{LightningCSVLogger(self._root, self._experiment_name).version}"
        return self._run_version

    @property
    def run_folder(self) -> Path:
        return Path(self._root) / self._experiment_name / self.version

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            self._wandb_init.update(self._init_arguments())
            try:
                return super().experiment
            except Exception as error:  # wandb.errors.CommError and kin: an online start that failed
                if self._wandb_init["mode"] != "online":
                    raise
                rank_zero_warn(f"W&B: could not start online ({error}); writing the run offline instead.")
                self._wandb_init["mode"] = "offline"
        return super().experiment

    def _init_arguments(self) -> dict[str, Any]:
        folder = self.run_folder
        folder.mkdir(parents=True, exist_ok=True)
        mode, reason = choose_mode(self._mode, self._connect_timeout)
        if mode != "online":
            # Process-wide, as wandb reads it: its usage telemetry goes by the global mode, not by the run's,
            # and would otherwise still try to reach the W&B server from an offline run.
            os.environ["WANDB_MODE"] = mode
        if mode == "offline":
            rank_zero_info(
                f"W&B: offline ({reason}). The run is written to {folder / 'wandb'}; upload it later from a "
                f"machine with internet: wandb sync {folder / 'wandb'}/offline-run-*  (or slurm/wandb-sync.sh)."
            )
        return {
            "dir": str(folder.resolve()),  # absolute: a wandb service shared with another process has its own cwd
            "id": run_id(folder),
            "name": self._wandb_init.get("name") or f"{self._experiment_name}/{self.version}",
            "group": self._wandb_init.get("group") or self._experiment_name,
            "mode": mode,
        }

    @rank_zero_only
    def mark_preempting(self) -> None:
        """Tell W&B the run is being preempted (shown as such, not as crashed) before a requeue.

        Not for a sweep agent's run: the sweep would hand its values to another agent, which would start them
        over in a new folder (slurm/sweep-agent.sbatch moves the interrupted run aside instead).
        """
        if self._experiment is not None and not os.environ.get("WANDB_SWEEP_ID"):
            self._experiment.mark_preempting()

    def finalize(self, status: str) -> None:
        """Log the best checkpoint (``log_model``), then close the run so its files are complete on disk."""
        super().finalize(status)
        if self._experiment is not None and rank_zero_only.rank == 0:
            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None


def run_id(folder: Path) -> str:
    """The W&B run id of a run folder, created (atomically) on first use.

    Under a W&B sweep agent the agent's id (``WANDB_RUN_ID``) wins, as wandb itself uses it; it is recorded too.
    """
    path = folder / RUN_ID_FILE
    agent_id = os.environ.get("WANDB_RUN_ID")
    if agent_id:
        atomic_write_text(path, agent_id + "\n")
        return agent_id
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    new_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # wandb's form
    atomic_write_text(path, new_id + "\n")
    return new_id


def choose_mode(requested: Mode, connect_timeout: float) -> tuple[str, str]:
    """The W&B mode to run in, and why."""
    if requested != "auto":
        return requested, "set in the logger config"
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], "WANDB_MODE"
    base_url = os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)
    if not api_key_configured(base_url):
        return "offline", "no W&B API key: set WANDB_API_KEY or run `wandb login`"
    if not server_answers(base_url, connect_timeout):
        return "offline", f"{base_url} did not answer within {connect_timeout:g} s"
    return "online", f"{base_url} answered"


def api_key_configured(base_url: str) -> bool:
    """An API key in the environment, an identity token file, or a ``wandb login`` entry in the netrc file."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        entry = netrc.netrc(os.environ.get("NETRC")).authenticators(urlparse(base_url).hostname or "")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def server_answers(url: str, timeout: float) -> bool:
    """Whether one HTTP request to ``url`` (through ``HTTPS_PROXY`` if set) gets any HTTP answer within
    ``timeout`` seconds in all, name resolution included.

    An HTTP answer, not a TCP connection: some clusters' firewalls accept every connection and then drop it.
    """
    answered: list[bool] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        except urllib.error.HTTPError:  # a status code (404, 401, ...): the server is there
            pass
        except (OSError, http.client.HTTPException, ValueError):
            return
        answered.append(True)

    probe = threading.Thread(target=ask, daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(answered)
