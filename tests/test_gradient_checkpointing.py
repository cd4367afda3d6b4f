"""``model.gradient_checkpointing``: the encoder recomputes its layers in the backward pass, for the same result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bertcls.model.encoder import is_checkpointing
from bertcls.model.module import BertClassifier

LABELS = ["neg", "neutral", "pos"]
TEXTS = ["a great and wonderful film", "dull", "an average story, told at an average pace by average actors", "ok"]


def tiny_classifier(model_dir: Path, checkpointing: bool) -> BertClassifier:
    """The tiny BERT without dropout (encoder and head), in train mode; the same weights for a given seed."""
    config = json.loads((model_dir / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = BertClassifier(
        model_name=str(model_dir),
        task="single_label",
        label_names=LABELS,
        dropout=0.0,
        encoder_config=config,  # the architecture alone, as when a checkpoint is restored
        gradient_checkpointing=checkpointing,
    )
    return model.train()


def loss_and_gradients(model: BertClassifier, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    loss = model.head.loss(model(batch), batch["labels"])
    loss.backward()
    return loss.detach(), {name: parameter.grad for name, parameter in model.named_parameters()}


@pytest.fixture
def batch(minilm_tokenizer) -> dict[str, torch.Tensor]:
    encoded = minilm_tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert encoded["attention_mask"].min() == 0  # padding is part of what must match
    return {**encoded, "labels": torch.tensor([2, 0, 1, 1])}


def test_checkpointing_gives_the_same_loss_and_gradients(tiny_model_dir: Path, batch: dict) -> None:
    plain = tiny_classifier(tiny_model_dir, checkpointing=False)
    checkpointed = tiny_classifier(tiny_model_dir, checkpointing=True)
    for name, tensor in plain.state_dict().items():
        assert torch.equal(checkpointed.state_dict()[name], tensor), name
    assert not is_checkpointing(plain.encoder)
    assert is_checkpointing(checkpointed.encoder)
    assert checkpointed.hparams.gradient_checkpointing is True  # saved, so a restored model checkpoints too

    expected_loss, expected = loss_and_gradients(plain, batch)
    loss, gradients = loss_and_gradients(checkpointed, batch)
    torch.testing.assert_close(loss, expected_loss)
    assert expected.keys() == gradients.keys()
    for name, gradient in expected.items():
        assert gradient is not None and gradients[name] is not None, name
        torch.testing.assert_close(gradients[name], gradient, msg=name)


def test_checkpointed_layers_run_again_in_the_backward_pass(tiny_model_dir: Path, batch: dict) -> None:
    """The flag is really used: each layer's forward runs twice per training step (once more to recompute)."""
    calls = {False: 0, True: 0}
    for checkpointing in (False, True):
        model = tiny_classifier(tiny_model_dir, checkpointing)
        # A module inside the layer: transformers checkpoints the layer's forward, leaving the layer's own hooks out.
        layer = model.encoder.encoder.layer[0].intermediate

        def count(*_: object, checkpointing: bool = checkpointing) -> None:
            calls[checkpointing] += 1

        layer.register_forward_hook(count)
        loss_and_gradients(model, batch)
        if checkpointing:
            model.eval()  # no recomputation without gradients: inference is unchanged
            with torch.no_grad():
                model(batch)
    assert calls == {False: 1, True: 3}
