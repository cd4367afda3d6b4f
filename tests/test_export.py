"""``bertcls export``: a standard Hugging Face folder that transformers alone loads, with bertcls' predictions.

Real weights and data where the claim is about real behaviour: the packaged all-MiniLM-L6-v2 fine-tuned for a
few steps on Rotten Tomatoes sentences (sentiment, [CLS] pooling; mean pooling: a sentence-transformers folder) and
on CoNLL-2003 sentences (NER); the tiny random BERT for BERT's own pooler and multi-label. The quickstart config as
shipped: tests/test_real_weights.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from helpers import CONFIGS, MOVIE_REVIEWS, run_cli, write_frame
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from bertcls.commands.export import export
from bertcls.errors import InputError
from bertcls.export.checkpoint import load_checkpoint
from bertcls.export.hf_folder import export_hf_folder
from bertcls.paths import resolve_location

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
MAX_LENGTH = 64


def fit(folder: Path, experiment: str, *args: object) -> Path:
    """A short ``bertcls fit`` in ``folder``; returns its last checkpoint."""
    common = [
        "fit", "--config", CONFIGS / "quickstart.yaml", "--data.where", "null", "--data.max_length", MAX_LENGTH,
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.max_epochs", "1", "--experiment", experiment,
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("BERTCLS_CACHE", str(folder / "cache"))
        assert run_cli(*common, *args) is None
    return folder / "checkpoints" / experiment / "version_0" / "checkpoints" / "last.ckpt"


def predict(
    folder: Path, checkpoint: Path, data: Path, *args: object, max_length: int | None = MAX_LENGTH
) -> list[dict]:
    """``bertcls predict``'s records; ``max_length`` None: the checkpoint's own."""
    output = folder / f"predictions-{checkpoint.parent.parent.name}-{checkpoint.name}.jsonl"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("BERTCLS_CACHE", str(folder / "cache"))
        command = ["predict", "--ckpt_path", checkpoint, "--data.predict_file", data]
        command += ["--predictions.output_file", output, "--trainer.logger", "false"]
        command += [*args, *(["--data.max_length", max_length] if max_length else [])]
        assert run_cli(*command, "--trainer.enable_progress_bar", "false") is None
    return [json.loads(line) for line in output.read_text().splitlines()]


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """MiniLM, [CLS] pooling, 12 steps on Rotten Tomatoes; 300 other real sentences and reviews to predict."""
    folder = tmp_path_factory.mktemp("export-sentiment")
    reviews = pd.read_csv(resolve_location(MOVIE_REVIEWS))
    rotten = reviews[reviews["source"] != "imdb"].sample(frac=1.0, random_state=0)
    write_frame(rotten.iloc[:192][["text", "label"]], folder / "train.csv")
    write_frame(rotten.iloc[192:256][["text", "label"]], folder / "dev.csv")
    imdb = reviews[reviews["source"] == "imdb"].iloc[:100]  # long: truncated at MAX_LENGTH by both
    texts = pd.concat([rotten.iloc[256:456], imdb])[["text"]]
    predict_file = write_frame(texts, folder / "predict.csv")
    checkpoint = sentiment_fit(folder, "cls")
    exported = folder / "exported"
    result = export([str(checkpoint), "--output", str(exported)])
    return SimpleNamespace(
        folder=folder, checkpoint=checkpoint, exported=exported, result=result, texts=texts["text"].tolist(),
        bertcls=predict(folder, checkpoint, predict_file),
    )  # fmt: skip


def sentiment_fit(folder: Path, pooling: str) -> Path:
    """12 steps of MiniLM with ``pooling`` on the sentiment fixture's files; its last checkpoint."""
    return fit(
        folder, pooling, "--model.pooling", pooling, "--data.train_file", folder / "train.csv",
        "--data.validation_file", folder / "dev.csv", "--data.batch_size", "16", "--model.learning_rate", "1e-4",
    )  # fmt: skip


def assert_same_predictions(records: list[dict], probabilities: list[dict[str, float]]) -> None:
    """Each row's label is bertcls', and its probabilities are within 1e-4 (bertcls rounds them to 6 decimals)."""
    assert len(probabilities) == len(records)
    largest = 0.0
    for record, by_label in zip(records, probabilities, strict=True):
        assert set(by_label) == set(record["probabilities"])
        assert max(by_label, key=by_label.get) == max(record["probabilities"], key=record["probabilities"].get)
        largest = max(largest, *(abs(by_label[name] - value) for name, value in record["probabilities"].items()))
    assert largest < 1e-4, largest


def pipeline_probabilities(folder: Path, texts: list[str]) -> list[dict[str, float]]:
    """transformers' own text-classification pipeline on the exported folder: each text's probability per label."""
    classify = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")
    outputs = classify(texts, batch_size=16, truncation=True)
    return [{score["label"]: score["score"] for score in scores} for scores in outputs]


def test_pipeline_on_the_exported_folder_gives_bertcls_predictions(sentiment: SimpleNamespace) -> None:
    assert len(sentiment.bertcls) == 300
    assert_same_predictions(sentiment.bertcls, pipeline_probabilities(sentiment.exported, sentiment.texts))
    assert sentiment.result["hf_difference"] < 1e-4


def test_the_folder_is_a_standard_one_that_loads_without_bertcls(sentiment: SimpleNamespace) -> None:
    config = json.loads((sentiment.exported / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["problem_type"] == "single_label_classification"
    assert config["id2label"] == {"0": "0", "1": "1"} and config["label2id"] == {"0": 0, "1": 1}
    assert config["bertcls"] == {"task": "single_label", "pooling": "cls", "max_length": MAX_LENGTH}
    assert (sentiment.exported / "model.safetensors").is_file()
    tokenizer_config = json.loads((sentiment.exported / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == MAX_LENGTH
    # A fresh interpreter that never imports bertcls: AutoModel + AutoTokenizer, and the label of one review.
    script = (
        "import sys, torch\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        f"folder = {str(sentiment.exported)!r}\n"
        "model = AutoModelForSequenceClassification.from_pretrained(folder).eval()\n"
        "batch = AutoTokenizer.from_pretrained(folder)([sys.argv[1]], return_tensors='pt', truncation=True)\n"
        "print(model.config.id2label[int(model(**batch).logits.argmax())])\n"
        "assert not any(name.startswith('bertcls') for name in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, sentiment.texts[0]], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == max(
        sentiment.bertcls[0]["probabilities"], key=sentiment.bertcls[0]["probabilities"].get
    )


def test_bertcls_predicts_from_the_exported_folder_as_from_the_checkpoint(sentiment: SimpleNamespace) -> None:
    again = predict(sentiment.folder, sentiment.exported, sentiment.folder / "predict.csv")
    assert [record["row"] for record in again] == [record["row"] for record in sentiment.bertcls]
    for original, reimported in zip(sentiment.bertcls, again, strict=True):
        for label, value in original["probabilities"].items():
            assert reimported["probabilities"][label] == pytest.approx(value, abs=2e-6)


def test_export_refuses_an_existing_folder(sentiment: SimpleNamespace) -> None:
    exit_ = run_cli("export", sentiment.checkpoint, "--output", sentiment.exported)
    assert isinstance(exit_, SystemExit) and "already exists" in str(exit_.code) and "--overwrite" in str(exit_.code)


@pytest.fixture(scope="module")
def mean_sentiment(sentiment: SimpleNamespace) -> SimpleNamespace:
    """The sentiment run again with mean pooling, exported (a sentence-transformers folder, and ONNX) and predicted."""
    checkpoint = sentiment_fit(sentiment.folder, "mean")
    exported = sentiment.folder / "exported-mean"
    result = export([str(checkpoint), "--output", str(exported), "--onnx"])
    bertcls = predict(sentiment.folder, checkpoint, sentiment.folder / "predict.csv")
    return SimpleNamespace(checkpoint=checkpoint, exported=exported, result=result, bertcls=bertcls)


def test_sentence_transformers_loads_the_mean_pooled_export_without_bertcls(
    mean_sentiment: SimpleNamespace, sentiment: SimpleNamespace, tmp_path: Path
) -> None:
    """A fresh interpreter that never imports bertcls: SentenceTransformer's logits, softmax, bertcls' predictions."""
    modules = json.loads((mean_sentiment.exported / "modules.json").read_text())
    assert [module["type"].rsplit(".", 1)[-1] for module in modules] == ["Transformer", "Pooling", "Dense"]
    assert json.loads((mean_sentiment.exported / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "mean"
    config = json.loads((mean_sentiment.exported / "config.json").read_text())
    assert config["bertcls"] == {"task": "single_label", "pooling": "mean", "max_length": MAX_LENGTH}
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(sentiment.texts))
    script = (
        "import json, sys\n"
        "from sentence_transformers import SentenceTransformer\n"
        f"folder = {str(mean_sentiment.exported)!r}\n"
        "model = SentenceTransformer(folder, device='cpu')\n"
        "labels = json.load(open(folder + '/config.json'))['id2label']\n"
        "logits = model.encode(json.load(open(sys.argv[1])), batch_size=16, convert_to_tensor=True)\n"
        "print(json.dumps([{labels[str(i)]: p for i, p in enumerate(row)} for row in logits.softmax(-1).tolist()]))\n"
        "assert not any(name.startswith('bertcls') for name in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, texts], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    probabilities = json.loads(done.stdout.splitlines()[-1])
    assert len({max(row, key=row.get) for row in probabilities}) == 2, "the model predicts both labels"
    assert_same_predictions(mean_sentiment.bertcls, probabilities)
    assert mean_sentiment.result["st_difference"] < 1e-4 and mean_sentiment.result["onnx_difference"] < 1e-4
    assert (mean_sentiment.exported / "model.onnx").is_file()


def test_bertcls_predicts_from_the_sentence_transformers_folder_as_from_the_checkpoint(
    mean_sentiment: SimpleNamespace, sentiment: SimpleNamespace
) -> None:
    again = predict(sentiment.folder, mean_sentiment.exported, sentiment.folder / "predict.csv")
    for original, reimported in zip(mean_sentiment.bertcls, again, strict=True):
        for label, value in original["probabilities"].items():
            assert reimported["probabilities"][label] == pytest.approx(value, abs=2e-6)


def test_mean_pooling_refusals_say_what_to_do(
    mean_sentiment: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transformers folder (Python API) names the sentence-transformers folder and ONNX; without the
    sentence-transformers package, ``bertcls export`` names its extra and ``--onnx-only``."""
    with pytest.raises(InputError) as refused:
        export_hf_folder(load_checkpoint(mean_sentiment.checkpoint), tmp_path / "hf", mean_sentiment.checkpoint)
    for advice in ("sentence-transformers folder", "--onnx", "--model.pooling cls", "docs/export.md"):
        assert advice in str(refused.value), advice
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # importlib.util.find_spec: not installed
    exit_ = run_cli("export", mean_sentiment.checkpoint, "--output", tmp_path / "st")
    assert isinstance(exit_, SystemExit), exit_
    assert "pip install 'bertcls[sentence-transformers]'" in str(exit_.code) and "--onnx-only" in str(exit_.code)


def test_pooler_and_multi_label_heads_map_exactly(tmp_path: Path, tiny_model_dir: Path, real_words: list[str]) -> None:
    """BERT's own pooler (pooling ``pooler``) maps one to one; multi-label keeps its sigmoid problem type and
    carries the tuned thresholds in the config."""
    from helpers import separable_frame

    frame = separable_frame(real_words, 96, seed=1)
    frame["label"] = frame["label"].map({"pos": "pos,good", "neg": "neg"})
    train = write_frame(frame, tmp_path / "train.csv")
    dev = write_frame(separable_frame(real_words, 32, seed=2).assign(label=lambda f: f["label"]), tmp_path / "d.csv")
    checkpoint = fit(
        tmp_path, "multi", "--data.task", "multi_label", "--model.model_name", tiny_model_dir,
        "--model.pooling", "pooler", "--data.train_file", train, "--data.validation_file", dev,
    )  # fmt: skip
    result = export([str(checkpoint), "--output", str(tmp_path / "exported")])
    assert result["hf_difference"] < 1e-5
    config = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]["head.thresholds"]
    assert config["bertcls"]["thresholds"] == pytest.approx(stored.tolist(), abs=1e-6)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "exported")
    assert torch.equal(model.bert.pooler.dense.weight, stored_encoder_pooler(checkpoint))


def stored_encoder_pooler(checkpoint: Path) -> torch.Tensor:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]["encoder.pooler.dense.weight"]


@pytest.fixture(scope="module")
def ner(tmp_path_factory: pytest.TempPathFactory, shared_data_module: Path) -> SimpleNamespace:
    """MiniLM fine-tuned for 20 steps on CoNLL-2003 sentences; 120 short test sentences to predict."""
    from test_token import conll_head

    folder = tmp_path_factory.mktemp("export-ner")
    conll = shared_data_module / "conll2003"
    train = conll_head(conll / "train.txt", folder / "train.txt", 320)
    dev = conll_head(conll / "valid.txt", folder / "valid.txt", 40)
    test = conll_head(conll / "test.txt", folder / "test.txt", 120)
    checkpoint = fit(
        folder, "ner", "--data", CONFIGS / "data" / "conll2003.yaml", "--data.where", "null",
        "--data.train_file", train, "--data.validation_file", dev, "--data.test_file", test,
        "--data.batch_size", "16", "--model.learning_rate", "3e-4",
    )  # fmt: skip
    exported = folder / "exported"
    export([str(checkpoint), "--output", str(exported)])
    return SimpleNamespace(exported=exported, bertcls=predict(folder, checkpoint, test))


@pytest.fixture(scope="module")
def shared_data_module() -> Path:
    from helpers import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATA} (expected beside the checkout)")
    return SHARED_DATA


def test_token_classification_export_gives_bertcls_word_tags_and_entities(ner: SimpleNamespace) -> None:
    config = json.loads((ner.exported / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    tokenizer = AutoTokenizer.from_pretrained(ner.exported)
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(ner.exported).eval()

    def fits(words: list[str]) -> bool:  # longer sentences: bertcls splits them into windows, transformers cuts
        return len(tokenizer(words, is_split_into_words=True)["input_ids"]) <= MAX_LENGTH

    records = [record for record in ner.bertcls if fits(record["tokens"])]
    assert len(records) > 100
    entities_seen = 0
    for record in records:
        encoded = tokenizer(record["tokens"], is_split_into_words=True, return_tensors="pt", truncation=True)
        with torch.inference_mode():
            predicted = model(**encoded).logits[0].argmax(-1).tolist()
        first_piece: dict[int, int] = {}
        for position, word in enumerate(encoded.word_ids()):
            if word is not None and word not in first_piece:
                first_piece[word] = position
        tags = [model.config.id2label[predicted[first_piece[word]]] for word in range(len(record["tokens"]))]
        assert tags == record["tags"], record["row"]
        entities_seen += len(record["entities"])
    assert entities_seen > 20, "the model predicts entities: the comparison is not only of O tags"
    # transformers' own pipeline on the sentence text: the same entities at the same character offsets.
    tagger = pipeline("token-classification", model=str(ner.exported), aggregation_strategy="first", device="cpu")
    for record in records[:40]:
        found = tagger(" ".join(record["tokens"]))
        assert [(entity["entity_group"], entity["start"], entity["end"]) for entity in found] == [
            (entity["type"], entity["start_char"], entity["end_char"]) for entity in record["entities"]
        ], record["row"]
