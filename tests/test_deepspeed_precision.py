"""DeepSpeed's ``bf16-mixed``: the model runs in bf16 (no autocast), but the heads' loss weights and multi-label
decision thresholds stay fp32, so that class-weighted losses compute and tuned thresholds are not rounded.

DeepSpeed before 0.19.4 casts the whole module, buffers included (``module.bfloat16()``); later versions cast
only the parameters. ``helpers.LegacyCastDeepSpeedStrategy`` runs the real ZeRO engine with the older cast, each
run in its own process.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import run_bertcls_process, run_checkpoints, separable_frame, write_frame
from test_cli_end_to_end import fit_args, run_in

from bertcls.commands import convert
from bertcls.tasks import HeadOptions, get_task

LABELS = ("pos", "neg", "neutral")
THRESHOLD = 0.4137  # bf16 would round it to 0.4140625
LEGACY_ZERO2 = """\
class_path: helpers.LegacyCastDeepSpeedStrategy
init_args: {stage: 2, logging_batch_size_per_gpu: 16}
"""

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="SKIPPED ON PURPOSE: DeepSpeed (the optional extra) is needed: pip install 'bertcls[deepspeed]'",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, real_words: list[str]) -> Path:
    folder = tmp_path_factory.mktemp("deepspeed-bf16")
    write_frame(separable_frame(real_words, 112, seed=1, labels=LABELS), folder / "train.csv")
    validation = separable_frame(real_words, 48, seed=2, labels=LABELS)
    write_frame(validation, folder / "dev.csv")
    write_frame(validation[["text"]], folder / "predict.csv")
    (folder / "zero2.yaml").write_text(LEGACY_ZERO2)
    return folder


def zero2_bf16_fit(folder: Path, model_dir: Path, experiment: str, *extra: object) -> dict[str, torch.Tensor]:
    """One epoch under ZeRO-2 ``bf16-mixed`` with balanced class weights; the model states its checkpoint holds."""
    files = SimpleNamespace(train=folder / "train.csv", validation=folder / "dev.csv")
    args = fit_args(model_dir, files, experiment, 1, "--trainer.strategy", folder / "zero2.yaml", *extra)
    extra_args = ("--trainer.precision", "bf16-mixed", "--model.class_weights", "balanced")
    done = run_bertcls_process(*args, *extra_args, cwd=folder, env={"BERTCLS_CACHE": str(folder / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    states = run_checkpoints(folder, experiment) / "last.ckpt" / "checkpoint" / "mp_rank_00_model_states.pt"
    return torch.load(states, map_location="cpu", weights_only=False)


@pytest.mark.strategies
def test_single_label_trains_with_class_weights(folder: Path, tiny_model_dir: Path) -> None:
    states = zero2_bf16_fit(folder, tiny_model_dir, "single")
    assert states["global_steps"] == 7
    assert states["module"]["head.classifier.weight"].dtype == torch.bfloat16  # the model did run in bf16
    weights = states["module"]["head.loss_weights"]
    assert weights.dtype == torch.float32 and not torch.equal(weights, torch.ones(3))  # filled in from the data


@pytest.mark.strategies
def test_multi_label_thresholds_keep_their_fp32_values_in_the_checkpoint_and_predict(
    folder: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    task_args = ("--data.task", "multi_label", "--model.threshold", THRESHOLD, "--model.tune_thresholds", "false")
    module = zero2_bf16_fit(folder, tiny_model_dir, "multi", *task_args)["module"]
    exact = torch.full((3,), THRESHOLD)
    assert module["head.thresholds"].dtype == torch.float32 and torch.equal(module["head.thresholds"], exact)
    assert module["head.loss_weights"].dtype == torch.float32

    converted = tmp_path / "multi.ckpt"
    assert convert.main([str(run_checkpoints(folder, "multi") / "last.ckpt"), "--to", str(converted)]) is None
    output = tmp_path / "predictions.jsonl"
    args = ["--data.predict_file", folder / "predict.csv", "--predictions.output_file", output]
    assert run_in(folder, "predict", "--ckpt_path", converted, *args, "--trainer.logger", "false") is None
    used = json.loads(output.with_name(output.name + ".thresholds.json").read_text())["thresholds"]
    assert used == dict.fromkeys(sorted(LABELS), exact[0].item())


LOSS_INPUTS = {  # logits and labels for 4 examples of 3 labels (token: 4 sentences of 2 word pieces)
    "single_label": (torch.randn(4, 3), torch.tensor([0, 1, 2, 0])),
    "multi_label": (torch.randn(4, 3), torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 1]])),
    "token": (torch.randn(4, 2, 3), torch.tensor([[0, 1], [2, -100], [1, 1], [-100, 0]])),
}


@pytest.mark.parametrize("task", list(LOSS_INPUTS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_cast_of_the_model_keeps_the_heads_buffers_fp32_and_its_loss_computes(task: str, dtype: torch.dtype) -> None:
    options = HeadOptions(dropout=0.0, loss_weights=torch.tensor([1.0, 2.0, 3.0]), threshold=THRESHOLD)
    head = get_task(task).build_head(8, 3, options)
    buffers = {name: buffer.clone() for name, buffer in head.named_buffers()}
    head.to(dtype)  # what bf16-true does, and DeepSpeed before 0.19.4 (module.bfloat16())
    assert head.classifier.weight.dtype == dtype
    for name, buffer in head.named_buffers():
        assert buffer.dtype == torch.float32 and torch.equal(buffer, buffers[name]), name
    logits, labels = LOSS_INPUTS[task]
    assert torch.isfinite(head.loss(logits.to(dtype), labels))
