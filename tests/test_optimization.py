"""AdamW parameter groups: no weight decay on biases and LayerNorm weights, layer-wise learning-rate decay."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from bertcls.model.module import BertClassifier
from bertcls.model.optimization import layer_depth, parameter_groups

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
