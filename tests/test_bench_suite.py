"""The training benchmark suite's arithmetic (``bench/suite.py``): model FLOPs, time to target, training time.

The suite itself trains for minutes per system (``python bench/suite.py``); these checks are what its figures
rest on, against published numbers and hand-computed cases.
"""

from __future__ import annotations

import sys
import time

import pytest
import torch
from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
from harness import BatchMeter, Result, TrainClock
from suite import SHAPES, model_flops, time_to_target


def result(real_tokens: int, real_token_squares: int, curve: list | None = None) -> Result:
    return Result(
        system="x", steps=1, samples=1, real_tokens=real_tokens, padded_tokens=real_tokens, train_seconds=1.0,
        peak_rss_mb=0.0, metrics={}, train_rows="", eval_rows="", train_count=1, eval_count=1, optimizer="",
        torch_threads=1, real_token_squares=real_token_squares, curve=curve or [],
    )  # fmt: skip


def bert_shape(name: str) -> dict[str, int]:
    layers, hidden, _, intermediate = SHAPES[name]
    return {"layers": layers, "hidden": hidden, "matmul_weights": layers * (4 * hidden**2 + 2 * hidden * intermediate)}


@pytest.mark.parametrize(("name", "gflop"), [("bert-base-shape", 0.52), ("bert-large-shape", 1.85)])
def test_training_flops_per_token_match_the_published_figures(name: str, gflop: float) -> None:
    """About 0.52 GFLOP (BERT-base) and 1.85 GFLOP (BERT-large) per token of a 128-token sequence."""
    sequence = 128
    per_token = model_flops(result(sequence, sequence**2), bert_shape(name)) / sequence
    assert per_token / 1e9 == pytest.approx(gflop, abs=0.01)


def test_attention_flops_count_each_sequence_at_its_own_length() -> None:
    """Two sequences of 10 and 30 real tokens: the attention term is 12 L h (10^2 + 30^2), not (40)^2 or padded."""
    shape = {"layers": 2, "hidden": 8, "matmul_weights": 100}
    meter = BatchMeter()
    mask = torch.zeros(2, 30, dtype=torch.long)
    mask[0, :10] = 1
    mask[1, :] = 1
    meter.add(mask)
    figures = meter.figures()
    assert figures == {"samples": 2, "real_tokens": 40, "padded_tokens": 60, "real_token_squares": 1000}
    flops = model_flops(result(figures["real_tokens"], figures["real_token_squares"]), shape)
    assert flops == 6 * 100 * 40 + 12 * 2 * 8 * 1000


def test_meter_ignores_paused_batches_and_batches_past_the_steps() -> None:
    meter = BatchMeter()
    meter.add(torch.ones(4, 5))
    meter.paused = True
    meter.add(torch.ones(8, 5))  # an evaluation batch collated by the same function
    meter.paused = False
    meter.add(torch.ones(3, 2))
    meter.add(torch.ones(3, 7))  # collated ahead, never trained on
    assert meter.figures(steps=2)["samples"] == 7


def test_time_to_target_is_the_first_evaluation_at_or_above_it() -> None:
    curve = [
        {"step": 25, "seconds": 10.0, "metrics": {"accuracy": 0.70}},
        {"step": 50, "seconds": 20.0, "metrics": {"accuracy": 0.80}},
        {"step": 75, "seconds": 30.0, "metrics": {"accuracy": 0.79}},
    ]
    assert time_to_target(result(1, 1, curve), "accuracy", 0.80) == 20.0
    assert time_to_target(result(1, 1, curve), "accuracy", 0.81) is None
    assert time_to_target(result(1, 1, curve), "f1", 0.1) is None


def test_clock_counts_training_and_not_the_evaluations_between() -> None:
    clock = TrainClock()
    time.sleep(0.05)
    clock.step_done()
    time.sleep(0.2)  # an evaluation
    clock.restart()
    time.sleep(0.05)
    clock.step_done()
    assert 0.09 <= clock.seconds < 0.2


def test_meter_leaves_a_mid_epoch_checkpoint_write_out_of_the_training_time(tmp_path) -> None:
    """Lightning runs LastCheckpoint's on_train_batch_end after the meter's: the write falls between two steps."""
    from lightning_meter import LightningMeter

    meter, batch = LightningMeter(str(tmp_path / "figures.json")), {"attention_mask": torch.ones(2, 4)}
    meter.on_train_epoch_start(None, None)
    for step in range(2):
        meter.on_train_batch_start(None, None, batch, step)
        time.sleep(0.05)
        meter.on_train_batch_end(None, None, None, batch, step)
        if step == 0:
            meter.on_save_checkpoint(None, None, {})
            time.sleep(0.3)  # the write
    assert 0.09 <= meter.clock.seconds < 0.3
