"""AdamW parameter groups (no weight decay on biases and LayerNorm weights, layer-wise learning-rate decay), the
schedule's length under gradient accumulation, and the optimizer under DeepSpeed's ZeRO-Offload."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pandas as pd
import pytest
import torch
from helpers import separable_frame, write_frame
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from test_cli_end_to_end import fit_args, run_in
from torch import nn

from bertcls.model.module import BertClassifier
from bertcls.model.optimization import (
    adamw,
    clip_gradients,
    layer_depth,
    offloads_optimizer,
    parameter_groups,
)

LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.05
NUM_LAYERS = 2  # the tiny model


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> BertClassifier:
    return BertClassifier(
        model_name=str(tiny_model_dir), task="single_label", label_names=["neg", "neutral", "pos"], pooling="pooler"
    )


def group_of(groups: list[dict]) -> dict[int, dict]:
    return {id(parameter): group for group in groups for parameter in group["params"]}


def expected_depth(name: str) -> int:
    if name.startswith("encoder.embeddings."):
        return 0
    for layer in range(NUM_LAYERS):
        if name.startswith(f"encoder.encoder.layer.{layer}."):
            return layer + 1
    return NUM_LAYERS + 1  # pooler and classification head


@pytest.mark.parametrize("decay", [1.0, 0.8])
def test_every_parameter_in_exactly_one_group_with_its_layer_rate(model: BertClassifier, decay: float) -> None:
    groups = parameter_groups(model, NUM_LAYERS, LEARNING_RATE, WEIGHT_DECAY, decay)
    owners = group_of(groups)
    named = dict(model.named_parameters())
    assert sum(len(group["params"]) for group in groups) == len(named) == len(owners)
    for name, parameter in named.items():
        group = owners[id(parameter)]
        depth = expected_depth(name)
        assert group["lr"] == pytest.approx(LEARNING_RATE * decay ** (NUM_LAYERS + 1 - depth)), name


def test_biases_and_layernorm_weights_get_no_weight_decay(model: BertClassifier) -> None:
    owners = group_of(parameter_groups(model, NUM_LAYERS, LEARNING_RATE, WEIGHT_DECAY, 0.9))
    no_decay = decay = 0
    for name, parameter in model.named_parameters():
        weight_decay = owners[id(parameter)]["weight_decay"]
        if name.endswith(".bias") or "LayerNorm" in name:
            assert weight_decay == 0.0, name
            no_decay += 1
        else:
            assert parameter.ndim >= 2
            assert weight_decay == WEIGHT_DECAY, name
            decay += 1
    assert no_decay > 0 and decay > 0


def test_layerwise_decay_rates_per_depth(model: BertClassifier) -> None:
    decay = 0.5
    groups = parameter_groups(model, NUM_LAYERS, LEARNING_RATE, WEIGHT_DECAY, decay)
    owners = group_of(groups)
    named = dict(model.named_parameters())
    rate = {name: owners[id(parameter)]["lr"] for name, parameter in named.items()}
    assert rate["encoder.embeddings.word_embeddings.weight"] == pytest.approx(LEARNING_RATE * 0.125)
    assert rate["encoder.encoder.layer.0.attention.self.query.weight"] == pytest.approx(LEARNING_RATE * 0.25)
    assert rate["encoder.encoder.layer.1.output.dense.weight"] == pytest.approx(LEARNING_RATE * 0.5)
    assert rate["encoder.pooler.dense.weight"] == pytest.approx(LEARNING_RATE)
    assert rate["head.classifier.weight"] == pytest.approx(LEARNING_RATE)
    # Groups are keyed by (depth, decays): at most two per depth, ordered from the embeddings up.
    assert len(groups) == 2 * (NUM_LAYERS + 2)
    assert [group["lr"] for group in groups] == sorted(group["lr"] for group in groups)


def test_frozen_parameters_are_left_out(model: BertClassifier) -> None:
    embeddings = model.encoder.embeddings
    try:
        embeddings.requires_grad_(False)
        groups = parameter_groups(model, NUM_LAYERS, LEARNING_RATE, WEIGHT_DECAY, 1.0)
        grouped = set(group_of(groups))
        assert not grouped & {id(parameter) for parameter in embeddings.parameters()}
        assert len(grouped) == sum(parameter.requires_grad for parameter in model.parameters())
    finally:
        embeddings.requires_grad_(True)


@pytest.mark.parametrize(
    ("name", "depth"),
    [
        ("encoder.embeddings.word_embeddings.weight", 0),
        ("embeddings.LayerNorm.bias", 0),
        ("encoder.encoder.layer.0.attention.output.dense.bias", 1),
        ("encoder.encoder.layer.11.output.LayerNorm.weight", 12),
        ("encoder.pooler.dense.weight", 13),
        ("head.classifier.bias", 13),
    ],
)
def test_layer_depth(name: str, depth: int) -> None:
    assert layer_depth(name, num_layers=12) == depth


def test_plain_module_gets_one_depth() -> None:
    module = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    groups = parameter_groups(module, 0, 0.1, 0.01, 0.5)
    assert [(group["lr"], group["weight_decay"], len(group["params"])) for group in groups] == [
        (0.1, 0.0, 3),
        (0.1, 0.01, 1),
    ]


def test_no_decay_is_found_by_module_not_by_shape(model: BertClassifier) -> None:
    """Under FSDP every parameter is a flat 1-D shard when ``configure_optimizers`` runs: decay must not change."""

    def decay_of_each_parameter() -> dict[int, float]:
        groups = parameter_groups(model, NUM_LAYERS, LEARNING_RATE, WEIGHT_DECAY, 1.0)
        return {id(parameter): group["weight_decay"] for group in groups for parameter in group["params"]}

    expected = decay_of_each_parameter()
    originals = {name: parameter.data for name, parameter in model.named_parameters()}
    try:
        for parameter in model.parameters():
            parameter.data = parameter.data.flatten()  # what FSDP's use_orig_params views look like
        assert decay_of_each_parameter() == expected
    finally:
        for name, parameter in model.named_parameters():
            parameter.data = originals[name]
    assert set(expected.values()) == {0.0, WEIGHT_DECAY}


# --- the schedule's length: gradient accumulation ---------------------------------------------------------
class RecordLearningRates(L.Callback):
    """``(global_step, learning rate)`` before every training batch, and once more after the last step.

    Also used by ``test_convert`` (``--trainer.callbacks+=test_optimization.RecordLearningRates``).
    """

    records: list[tuple[int, float]] = []

    @staticmethod
    def record(trainer: L.Trainer) -> None:
        rate = trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[-1]  # the top layers' (undecayed) rate
        RecordLearningRates.records.append((trainer.global_step, rate))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict, index: int) -> None:
        self.record(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record(trainer)


def assert_schedule_ends_at_the_last_step(records: list[tuple[int, float]], expected_steps: int) -> None:
    """Linear decay without warm-up: every batch before the last optimizer step trains at a rate above 0, and the
    rate reaches 0 at that step. A schedule longer than the run would end above 0; a shorter one would reach 0
    early and train at 0.
    """
    *during, (final_step, final_rate) = records
    assert final_step == expected_steps
    assert all(rate > 0 for step, rate in during if step < final_step), repr(during)
    assert final_rate == 0.0
    rates = [rate for _, rate in during]
    assert rates == sorted(rates, reverse=True)


def test_schedule_spans_the_optimizer_steps_with_gradient_accumulation(
    tiny_model_dir: Path, real_words: list[str], tmp_path: Path
) -> None:
    """7 batches an epoch, 2 per step: Lightning closes each epoch with a step on the last, lone batch (4 an epoch)."""
    task = SimpleNamespace(
        train=write_frame(separable_frame(real_words, 7 * 16, seed=1), tmp_path / "train.csv"),
        validation=write_frame(separable_frame(real_words, 32, seed=2), tmp_path / "dev.csv"),
    )
    RecordLearningRates.records.clear()
    extra = ("--trainer.accumulate_grad_batches", "2", "--model.warmup_ratio", "0")
    callback = "--trainer.callbacks+=test_optimization.RecordLearningRates"
    assert run_in(tmp_path, *fit_args(tiny_model_dir, task, "accumulate", 2, *extra, callback)) is None
    assert_schedule_ends_at_the_last_step(RecordLearningRates.records, expected_steps=2 * 4)
    assert len(RecordLearningRates.records) == 2 * 7 + 1


@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="SKIPPED ON PURPOSE: DeepSpeedStrategy cannot be built without the optional extra "
    "(pip install 'bertcls[deepspeed]'), which CI does not install",
)
def test_optimizer_offload_is_detected_from_the_strategy() -> None:
    from lightning.pytorch.strategies import DeepSpeedStrategy

    assert offloads_optimizer(DeepSpeedStrategy(stage=3, offload_optimizer=True, offload_parameters=True))
    assert not offloads_optimizer(DeepSpeedStrategy(stage=2))
    assert not offloads_optimizer(DeepSpeedStrategy(config={"zero_optimization": {"stage": 3}}))
    assert offloads_optimizer(DeepSpeedStrategy(config={"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}))
    assert not offloads_optimizer(object())


# --- mixed precision: the fused optimizer and gradient clipping ------------------------------------------
class RecordGradientNorms(L.Callback):
    """The gradient norm that stepped the optimizer: after clipping (Lightning clips after the
    ``on_before_optimizer_step`` hooks; the gradients stay until the next batch's ``zero_grad``)."""

    norms: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: object) -> None:
        gradients = [p.grad.float() for p in pl_module.parameters() if p.grad is not None]
        RecordGradientNorms.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in gradients]))))


def test_bf16_mixed_fit_clips_gradients_with_the_fused_optimizer(
    tiny_model_dir: Path, real_words: list[str], tmp_path: Path
) -> None:
    """configs/trainer/gpu.yaml's bf16-mixed with gradient_clip_val: Lightning alone refuses to clip for fused
    AdamW ("does not allow for gradient clipping") at the first step; bertcls clips, and the norms obey the limit."""
    task = SimpleNamespace(
        train=write_frame(separable_frame(real_words, 64, seed=1), tmp_path / "train.csv"),
        validation=write_frame(separable_frame(real_words, 32, seed=2), tmp_path / "dev.csv"),
    )
    RecordGradientNorms.norms.clear()
    extra = (
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.gradient_clip_val",
        "0.05",
        "--trainer.log_every_n_steps",
        "1",
    )
    callback = "--trainer.callbacks+=test_optimization.RecordGradientNorms"
    assert run_in(tmp_path, *fit_args(tiny_model_dir, task, "bf16", 1, *extra, callback)) is None
    assert len(RecordGradientNorms.norms) == 4
    assert max(RecordGradientNorms.norms) <= 0.05 * 1.001
    metrics = (tmp_path / "checkpoints" / "bf16" / "version_0" / "metrics.csv").read_text()
    norms_before = [float(value) for value in pd.read_csv(io.StringIO(metrics))["train/grad_norm"].dropna()]
    assert norms_before and min(norms_before) > 0.05, "the limit must bind, or nothing was clipped"


def test_the_gradient_norm_is_taken_only_on_logged_steps_and_clipping_reuses_it(
    tiny_model_dir: Path, real_words: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 optimizer steps logged every 4th: the norm is taken twice (not 8 times), and clipping by norm takes no
    norm of its own on those steps (one norm per logged step) while still binding on the others."""
    task = SimpleNamespace(
        train=write_frame(separable_frame(real_words, 128, seed=1), tmp_path / "train.csv"),
        validation=write_frame(separable_frame(real_words, 32, seed=2), tmp_path / "dev.csv"),
    )
    from bertcls.model import module as module_file

    calls = {"gradient_norm": 0, "get_total_norm": 0}
    original_norm, original_total = module_file.gradient_norm, torch.nn.utils.get_total_norm

    def counted_norm(*args: object):
        calls["gradient_norm"] += 1
        return original_norm(*args)

    def counted_total(*args: object, **kwargs: object):
        calls["get_total_norm"] += 1
        return original_total(*args, **kwargs)

    monkeypatch.setattr(module_file, "gradient_norm", counted_norm)
    monkeypatch.setattr(torch.nn.utils, "get_total_norm", counted_total)
    RecordGradientNorms.norms.clear()
    extra = ("--trainer.gradient_clip_val", "0.05", "--trainer.log_every_n_steps", "4")
    callback = "--trainer.callbacks+=test_optimization.RecordGradientNorms"
    assert run_in(tmp_path, *fit_args(tiny_model_dir, task, "norms", 1, *extra, callback)) is None
    assert len(RecordGradientNorms.norms) == 8
    assert max(RecordGradientNorms.norms) <= 0.05 * 1.001
    # Logged steps: gradient_norm's one total norm; the 6 others: clipping's own.
    assert calls == {"gradient_norm": 2, "get_total_norm": 2 + 6}


def test_fused_adamw_unless_a_gradient_scaler_unscales() -> None:
    """fp16's scaler (16-mixed on a GPU) needs unscaled gradients before clipping: foreach AdamW; otherwise fused."""
    parameters = [nn.Parameter(torch.ones(3))]
    fp16 = SimpleNamespace(precision_plugin=MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu")))
    bf16 = SimpleNamespace(precision_plugin=MixedPrecision("bf16-mixed", "cpu"))
    fp32 = SimpleNamespace(precision_plugin=Precision())
    assert not adamw([{"params": parameters}], 1e-3, 1e-8, fp16).defaults["fused"]
    assert adamw([{"params": parameters}], 1e-3, 1e-8, bf16).defaults["fused"]
    assert adamw([{"params": parameters}], 1e-3, 1e-8, fp32).defaults["fused"]


def test_clipping_by_norm_reuses_the_logged_norm_and_by_value_only_where_lightning_refuses() -> None:
    """By norm: clipped here in every precision, with the step's logged norm when there is one (one norm per
    step, not two). By value: here for bf16-mixed (Lightning refuses it with the fused AdamW), else Lightning's."""
    fp16 = SimpleNamespace(precision_plugin=MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu")))
    bf16 = SimpleNamespace(precision_plugin=MixedPrecision("bf16-mixed", "cpu"))
    fp32 = SimpleNamespace(precision_plugin=Precision())
    module = nn.Linear(4, 4)

    def gradients_norm() -> float:
        return float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in module.parameters()])))

    for strategy in (fp16, bf16, fp32):
        module.zero_grad()
        module(torch.ones(2, 4)).sum().mul(100).backward()
        assert clip_gradients(module, strategy, 1.0, GradClipAlgorithmType.NORM)
        assert gradients_norm() <= 1.0 + 1e-5
    module.zero_grad()
    module(torch.ones(2, 4)).sum().mul(100).backward()
    before = gradients_norm()
    # A given norm is used as it is: twice the true one halves the result.
    assert clip_gradients(module, fp32, 1.0, GradClipAlgorithmType.NORM, torch.tensor(2 * before))
    assert gradients_norm() == pytest.approx(0.5, rel=1e-4)
    assert not clip_gradients(module, bf16, None, GradClipAlgorithmType.NORM)
    assert not clip_gradients(module, fp16, 0.01, GradClipAlgorithmType.VALUE)
    assert not clip_gradients(module, fp32, 0.01, GradClipAlgorithmType.VALUE)
    assert clip_gradients(module, bf16, 0.01, GradClipAlgorithmType.VALUE)
    assert max(float(p.grad.abs().max()) for p in module.parameters()) <= 0.01


def test_fsdp_clips_by_norm_through_its_root_module() -> None:
    """Lightning raises for FSDP with gradient_clip_val by norm (every trainer config sets 1.0); the root module's
    clip_grad_norm_ takes the norm over all shards. (A real FSDP run needs CUDA GPUs.)"""
    from lightning.pytorch.strategies import FSDPStrategy

    calls: list[float] = []
    strategy = FSDPStrategy()
    strategy.model = SimpleNamespace(clip_grad_norm_=calls.append)
    module = nn.Linear(2, 2)
    assert clip_gradients(module, strategy, 1.0, GradClipAlgorithmType.NORM)
    assert calls == [1.0]
    assert not clip_gradients(module, strategy, 0.5, GradClipAlgorithmType.VALUE)
    assert not clip_gradients(module, strategy, 0.0, GradClipAlgorithmType.NORM)
    assert calls == [1.0]
