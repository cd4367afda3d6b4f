"""Shared fixtures: a tiny random BERT with the real MiniLM WordPiece tokenizer, isolated caches, the CLI.

Nothing here touches the network or the user's caches: the Hugging Face libraries are forced offline
before they are imported, ``datasets`` caches into a temporary folder, and every test gets its own
``BERTCLS_CACHE``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

# Set before transformers / datasets / huggingface_hub are imported anywhere (they read these at import).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
_SESSION_TMP = tempfile.mkdtemp(prefix="bertcls-tests-")
os.environ["HF_DATASETS_CACHE"] = os.path.join(_SESSION_TMP, "hf-datasets")
# Where transformers copies a model's own Python code before importing it (tests/test_remote_code.py).
os.environ["HF_MODULES_CACHE"] = os.path.join(_SESSION_TMP, "hf-modules")
# W&B: no credentials and no forced mode (the logger must find out by itself that it is offline), and its
# settings, caches and artifact staging in the same temporary folder, never in the user's home.
for _name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DIR"):
    os.environ.pop(_name, None)
for _name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
    os.environ[_name] = os.path.join(_SESSION_TMP, _name.lower())
os.environ["NETRC"] = os.path.join(_SESSION_TMP, "no-netrc")
# One intra-op thread: the tiny model gains nothing from more, and on a 2-core machine shared with another
# process, OpenMP threads spin-waiting on each other make a 4-second fit take a minute.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# DeepSpeed (optional extra), when installed on a machine without a GPU, prints a warning to stdout when it is
# first imported (parsing a DeepSpeed strategy config imports it), which corrupts `--print_config`'s YAML.
# Naming the accelerator it would pick anyway silences it.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

import logging  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import CUES, MINILM, SHARED_DATA, run_cli  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


# --- real tokenizer and tiny model ------------------------------------------------------------
@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from bertcls.paths import resolve_location

    return Path(resolve_location(MINILM))


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A 2-layer, hidden-32 random BERT saved beside the real MiniLM tokenizer (a real WordPiece vocabulary)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def real_words(minilm_dir: Path) -> list[str]:
    """Plain lower-case words of the real WordPiece vocabulary (no sentiment words), as filler."""
    excluded = {word for cues in CUES.values() for word in cues}
    words = []
    for line in (minilm_dir / "vocab.txt").read_text(encoding="utf-8").splitlines():
        if line.isascii() and line.isalpha() and line.islower() and 4 <= len(line) <= 9 and line not in excluded:
            words.append(line)
    assert len(words) > 5000
    return words


# --- isolation ------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def bertcls_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty tokenization cache (never ~/.cache/bertcls)."""
    cache = tmp_path_factory.mktemp("bertcls-cache")
    monkeypatch.setenv("BERTCLS_CACHE", str(cache))
    # seed_everything (the CLI) exports PL_GLOBAL_SEED, which the data module reads: keep tests independent.
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    return cache


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run with the working directory in a fresh folder (the configs log to ./checkpoints)."""
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATA} (expected beside the checkout)")
    return SHARED_DATA


@pytest.fixture
def lightning_messages() -> Iterator[list[str]]:
    """Messages Lightning and bertcls log with ``rank_zero_info`` (which bypass print), collected in a list."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(level=logging.INFO)
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield messages
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture
def cli():
    """Run ``bertcls`` in-process: ``cli("fit", "--config", ...)`` returns None, or the SystemExit it raised."""
    return run_cli
