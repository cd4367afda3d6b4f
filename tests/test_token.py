"""The token task (NER): the CoNLL reader, label alignment and windows, the seqeval-based evaluator, predictions.

Real CoNLL-2003 sentences from the shared data folder and the real MiniLM WordPiece tokenizer throughout;
the end-to-end test runs ``bertcls fit / test / predict`` on a few hundred of them with the tiny BERT.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CONFIGS
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities

from bertcls.data.collate import DynamicPaddingCollator
from bertcls.data.conll import read_conll
from bertcls.data.dataset import TokenizedDataset
from bertcls.data.labels import LabelVocabulary
from bertcls.data.sources import ROW_COLUMN
from bertcls.errors import DataError
from bertcls.tasks import DataSpec, HeadOptions, get_task
from bertcls.tasks.token import TokenTask
from bertcls.tasks.token.alignment import IGNORED, NO_WORD, windows

CONLL_SPLITS = {  # sentences, tokens, entities (B- tags) per type: the shared README's figures
    "train": (14041, 203621, {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}),
    "valid": (3250, 51362, {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}),
    "test": (3453, 46435, {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617}),
}
TASK = TokenTask()

pytestmark = [
    pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used to create"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]


def conll_frame(path: Path, sentences: int | None = None) -> pd.DataFrame:
    """A CoNLL file as the data module hands it to the task: with the ``row`` column."""
    frame = read_conll(str(path), str(path))
    frame = frame.head(sentences) if sentences else frame
    return frame.assign(**{ROW_COLUMN: range(len(frame))})


def vocabulary_of(frame: pd.DataFrame, spec: DataSpec) -> LabelVocabulary:
    return LabelVocabulary.from_labels(pd.Series(TASK.label_values(frame, spec, "data")))


def encode(frame: pd.DataFrame, tokenizer, spec: DataSpec, labelled: bool = True) -> TokenizedDataset:
    vocabulary = vocabulary_of(frame, spec) if labelled else None
    return TokenizedDataset(TASK.encode(frame, tokenizer, spec, vocabulary, "data"))


def evaluated_words(dataset: TokenizedDataset, names: tuple[str, ...]) -> Counter:
    """(row, word index, tag) of every evaluated position, counted (each must occur once)."""
    seen: Counter = Counter()
    for index in range(len(dataset)):
        example = dataset[index]
        for word, label in zip(example["word_ids"], example["labels"], strict=True):
            if word != NO_WORD:
                seen[(example["rows"], int(word), names[label])] += 1
    return seen


def expected_words(frame: pd.DataFrame) -> Counter:
    return Counter((row, word, tag) for row, tags in enumerate(frame["tags"]) for word, tag in enumerate(tags))


@pytest.fixture
def valid_frame(shared_data: Path) -> pd.DataFrame:
    return conll_frame(shared_data / "conll2003" / "valid.txt", 600)


# --- the CoNLL reader ---------------------------------------------------------------------------------
@pytest.mark.parametrize("split", sorted(CONLL_SPLITS))
def test_read_conll_gives_the_conll2003_sentences_and_entities(shared_data: Path, split: str) -> None:
    path = shared_data / "conll2003" / f"{split}.txt"
    frame = read_conll(str(path), str(path))
    sentences, tokens, entities = CONLL_SPLITS[split]
    assert list(frame.columns) == ["tokens", "tags", "line"]
    assert len(frame) == sentences
    assert frame["tokens"].map(len).sum() == tokens
    assert (frame["tokens"].map(len) == frame["tags"].map(len)).all()
    assert Counter(tag[2:] for tags in frame["tags"] for tag in tags if tag.startswith("B-")) == entities
    lines = path.read_text(encoding="utf-8").split("\n")
    for words, tags, line in frame.itertuples(index=False):  # ``line``: the line of the sentence's first token
        columns = lines[line - 1].split(" ")
        assert (columns[0], columns[-1]) == (words[0], tags[0])
        assert lines[line - 2] == "" and lines[line - 1 + len(words)] == ""


def test_read_conll_takes_tabs_runs_of_spaces_crlf_and_skips_document_starts(tmp_path: Path) -> None:
    path = tmp_path / "mixed.conll"
    path.write_bytes(
        "-DOCSTART- -X- O\n\nEU\tNNP\tB-ORG\r\nrejects  VBZ   O\r\n\r\n\r\n-DOCSTART-\n\nMüller NNP B-PER\n".encode()
    )
    frame = read_conll(str(path), "mixed.conll")
    assert frame["tokens"].tolist() == [["EU", "rejects"], ["Müller"]]
    assert frame["tags"].tolist() == [["B-ORG", "O"], ["B-PER"]]
    assert frame["line"].tolist() == [3, 9]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"EU B-ORG\nrejects\n", ["line 2", "single column", "'rejects'"]),
        (b"EU NNP B-ORG\n\nrejects O\n", ["line 3 has 2 columns but line 1 has 3"]),
        (b"EU B-ORG\n\nM\xfcller B-PER\n", ["line 3", "not valid UTF-8", "Re-save the file as UTF-8"]),
        (b"-DOCSTART- -X- O\n\n\n", ["no sentences found"]),
    ],
    ids=["single-column", "inconsistent-columns", "latin-1", "empty"],
)
def test_read_conll_names_the_file_and_line_of_malformed_input(
    tmp_path: Path, content: bytes, expected: list[str]
) -> None:
    path = tmp_path / "bad.conll"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        read_conll(str(path), "data/bad.conll")
    message = str(error.value)
    assert message.startswith("data/bad.conll: ")
    for part in expected:
        assert part in message


# --- label alignment and windows --------------------------------------------------------------------
@pytest.mark.parametrize("all_subtokens", [False, True], ids=["first-piece", "all-pieces"])
def test_first_piece_labels_decode_to_the_original_tags(valid_frame: pd.DataFrame, minilm_tokenizer, all_subtokens):
    spec = DataSpec(max_length=512, label_all_subtokens=all_subtokens)
    dataset = encode(valid_frame, minilm_tokenizer, spec)
    names = vocabulary_of(valid_frame, spec).names
    assert len(dataset) == len(valid_frame)  # no sentence needs a second window at 512
    assert evaluated_words(dataset, names) == expected_words(valid_frame)
    continuations = []  # (label of a continuation piece, tag of its word)
    for index in range(len(dataset)):
        example = dataset[index]
        assert example["labels"][0] == example["labels"][-1] == IGNORED  # [CLS] and [SEP]
        word_tag = None
        for word, label in zip(example["word_ids"][1:-1], example["labels"][1:-1], strict=True):
            if word != NO_WORD:
                word_tag = names[label]
            else:
                continuations.append((label, word_tag))
    assert sum(tag.startswith("B-") for _, tag in continuations) > 100, "entities of several word pieces"
    if all_subtokens:  # continuation pieces carry their word's tag, B-X turned into I-X
        for label, tag in continuations:
            assert names[label] == ("I-" + tag[2:] if tag.startswith("B-") else tag)
    else:
        assert all(label == IGNORED for label, _ in continuations)


@pytest.mark.parametrize("all_subtokens", [False, True], ids=["first-piece", "all-pieces"])
def test_windows_evaluate_every_word_once_and_keep_every_piece(
    valid_frame: pd.DataFrame, minilm_tokenizer, all_subtokens: bool
) -> None:
    spec = DataSpec(max_length=12, window_stride=4, label_all_subtokens=all_subtokens)
    dataset = encode(valid_frame, minilm_tokenizer, spec)
    assert evaluated_words(dataset, vocabulary_of(valid_frame, spec).names) == expected_words(valid_frame)
    assert int(dataset.lengths.max()) == 12
    # Consecutive windows of a sentence share 4 word pieces; together they hold all of the sentence's pieces.
    pieces: dict[int, list[int]] = {}
    for index in range(len(dataset)):
        example = dataset[index]
        content = example["input_ids"][1:-1].tolist()
        row = example["rows"]
        if row in pieces:
            assert pieces[row][-4:] == content[:4]
            pieces[row] += content[4:]
        else:
            pieces[row] = content
    for row, words in enumerate(valid_frame["tokens"]):
        encoded = minilm_tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        assert pieces[row] == encoded["input_ids"]
    long_sentences = sum(len(content) > 10 for content in pieces.values())
    assert long_sentences > 100
    assert len(dataset) > len(valid_frame) + long_sentences
    assert f"data: {long_sentences} sentences longer than max_length 12 were split into" in dataset.meta["notes"][0]


def test_window_ownership_partitions_the_pieces() -> None:
    for num_pieces in range(1, 80):
        spans = windows(num_pieces, 10, 4, split=True)
        owned = [piece for _, _, own_start, own_end in spans for piece in range(own_start, own_end)]
        assert owned == list(range(num_pieces))
        for start, end, own_start, own_end in spans:
            assert end - start <= 10 and start <= own_start < own_end <= end
        for (_, _, _, own_end), (start, _, _, _) in itertools.pairwise(spans):
            assert own_end - start == 2, "half the stride of context before the next window's first own piece"


def test_truncation_counts_the_words_it_cuts(valid_frame: pd.DataFrame, minilm_tokenizer) -> None:
    spec = DataSpec(max_length=12, long_inputs="truncate")
    dataset = encode(valid_frame, minilm_tokenizer, spec)
    assert len(dataset) == len(valid_frame)
    seen = evaluated_words(dataset, vocabulary_of(valid_frame, spec).names)
    expected = Counter()
    cut_sentences = 0
    for row, (words, tags) in enumerate(zip(valid_frame["tokens"], valid_frame["tags"], strict=True)):
        first_pieces = minilm_tokenizer(words, is_split_into_words=True, add_special_tokens=False).word_ids()
        kept = sorted(set(first_pieces[:10]))
        expected.update((row, word, tags[word]) for word in kept)
        cut_sentences += len(kept) < len(words)
    assert seen == expected
    assert dataset.meta["num_truncated"] == cut_sentences > 0
    cut_words = sum(map(len, valid_frame["tokens"])) - sum(seen.values())
    assert f"{cut_words} words of {cut_sentences} sentences were cut" in dataset.meta["notes"][0]


def test_rows_with_different_token_and_tag_counts_are_named() -> None:
    frame = pd.DataFrame(
        {"tokens": [["EU", "rejects"], ["Peter", "Blackburn"]], "tags": [["B-ORG", "O"], ["B-PER"]], "line": [3, 7]}
    ).assign(row=[0, 1])
    with pytest.raises(DataError, match=r"train.conll: row 2 \(line 7\) has 2 tokens \('tokens'\) but 1 tags"):
        TASK.label_values(frame, DataSpec(), "train.conll")
    with pytest.raises(DataError, match=r"column 'tokens' at row 1 \(line 3\) holds 'EU rejects', not a list"):
        TASK.label_values(frame.assign(tokens=["EU rejects", "x"]), DataSpec(), "train.jsonl")


def test_unknown_tags_and_parquet_arrays(minilm_tokenizer, tmp_path: Path) -> None:
    train = pd.DataFrame({"tokens": [["EU", "rejects"]], "tags": [["B-ORG", "O"]]})
    train.to_parquet(tmp_path / "train.parquet")
    frame = pd.read_parquet(tmp_path / "train.parquet").assign(row=[0])
    assert isinstance(frame["tokens"][0], np.ndarray)
    vocabulary = vocabulary_of(frame, DataSpec())
    dataset = TokenizedDataset(TASK.encode(frame, minilm_tokenizer, DataSpec(), vocabulary, "train.parquet"))
    assert evaluated_words(dataset, vocabulary.names) == Counter([(0, 0, "B-ORG"), (0, 1, "O")])
    validation = pd.DataFrame({"tokens": [["a"], ["Bonn"]], "tags": [["O"], ["B-LOC"]], "row": [0, 1]})
    with pytest.raises(DataError, match=r"dev.jsonl: column 'tags': label\(s\) \['B-LOC'\] at row 2"):
        TASK.encode(validation, minilm_tokenizer, DataSpec(), vocabulary, "dev.jsonl")


def test_predict_columns_are_the_words_or_else_the_text() -> None:
    assert isinstance(get_task("token"), TokenTask)
    spec = DataSpec()
    assert TASK.columns(spec, True, ["tokens", "tags", "line"]) == ["tokens", "tags", "line"]
    assert TASK.columns(spec, False, ["tokens", "tags", "line"]) == ["tokens", "line"]
    assert TASK.columns(spec, False, ["id", "text"]) == ["text"]
    assert TASK.columns(spec, False, ["id", "body"]) == ["tokens"]  # the data module names the missing column


# --- head and evaluator -------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_is_the_mean_over_labelled_pieces(smoothing: float) -> None:
    weights = torch.tensor([1.0, 2.0, 0.5])
    head = TASK.build_head(8, 3, HeadOptions(dropout=0.0, loss_weights=weights, label_smoothing=smoothing))
    logits = torch.randn(2, 5, 3, requires_grad=True)
    labels = torch.tensor([[IGNORED, 0, 2, IGNORED, IGNORED], [IGNORED, 1, 1, IGNORED, IGNORED]])
    kept = labels != IGNORED
    expected = torch.nn.functional.cross_entropy(logits[kept], labels[kept], weight=weights, label_smoothing=smoothing)
    torch.testing.assert_close(head.loss(logits, labels), expected)
    nothing = head.loss(logits, torch.full_like(labels, IGNORED))
    nothing.backward()
    assert nothing.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    assert torch.equal(head.state_dict()["loss_weights"], weights)


IOBES = [f"{prefix}-{kind}" for kind in ("LOC", "ORG", "PER") for prefix in "BIES"] + ["O"]
FIXED_GOLD = [
    ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "O"],
    ["B-ORG", "E-ORG", "O", "S-LOC"],
    ["O", "O", "O"],
    ["B-PER", "I-PER", "E-PER", "O", "S-ORG"],
]
FIXED_PREDICTED = [
    ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "O"],  # all right
    ["I-ORG", "E-ORG", "O", "E-LOC"],  # a span opened by I- and one by E- (broken, conlleval starts them)
    ["O", "I-PER", "I-PER"],  # a spurious broken span
    ["B-PER", "I-LOC", "E-PER", "O", "O"],  # a type switch inside a span, a missed entity
]


def run_evaluator(label_names: list[str], gold: list[list[str]], predicted: list[list[str]], detailed: bool):
    """Feed the sentences to an evaluator in shuffled pieces (as windows and batches arrive), then compute."""
    ids = {name: index for index, name in enumerate(label_names)}
    positions = [(row, word) for row, tags in enumerate(gold) for word in range(len(tags))]
    random.Random(0).shuffle(positions)
    evaluator = TASK.evaluator(label_names, "val/", detailed)
    head = TASK.build_head(8, len(label_names), HeadOptions(dropout=0.0))
    for start in range(0, len(positions), 7):  # "examples" of 7 positions: row and word ids, padding around
        chunk = positions[start : start + 7]
        rows = torch.tensor([row for row, _ in chunk])
        word_ids = torch.full((len(chunk), 3), NO_WORD)
        word_ids[:, 1] = torch.tensor([word for _, word in chunk])
        labels = torch.full((len(chunk), 3), IGNORED)
        labels[:, 1] = torch.tensor([ids[gold[row][word]] for row, word in chunk])
        logits = torch.randn(len(chunk), 3, len(label_names))
        logits[:, 1] = torch.nn.functional.one_hot(
            torch.tensor([ids[predicted[row][word]] for row, word in chunk]), len(label_names)
        ).float()
        evaluator.update(logits, {"rows": rows, "word_ids": word_ids, "labels": labels}, head)
    return evaluator, {name: value.item() for name, value in evaluator.compute(head).items()}


def assert_matches_seqeval(values: dict[str, float], gold: list[list[str]], predicted: list[list[str]]) -> None:
    assert values["val/entity_f1"] == pytest.approx(f1_score(gold, predicted), abs=1e-6)
    assert values["val/entity_precision"] == pytest.approx(precision_score(gold, predicted), abs=1e-6)
    assert values["val/entity_recall"] == pytest.approx(recall_score(gold, predicted), abs=1e-6)
    words = [
        (g, p)
        for gold_tags, predicted_tags in zip(gold, predicted, strict=True)
        for g, p in zip(gold_tags, predicted_tags, strict=True)
    ]
    assert values["val/token_accuracy"] == pytest.approx(np.mean([g == p for g, p in words]), abs=1e-6)


def test_evaluator_equals_seqeval_on_iobes_and_broken_sequences() -> None:
    evaluator, values = run_evaluator(IOBES, FIXED_GOLD, FIXED_PREDICTED, detailed=True)
    assert_matches_seqeval(values, FIXED_GOLD, FIXED_PREDICTED)
    assert 0 < values["val/entity_f1"] < 1
    report = classification_report(FIXED_GOLD, FIXED_PREDICTED, output_dict=True, zero_division=0)
    for kind in ("LOC", "ORG", "PER"):
        assert values[f"val/f1/{kind}"] == pytest.approx(report[kind]["f1-score"], abs=1e-6)
        assert values[f"val/precision/{kind}"] == pytest.approx(report[kind]["precision"], abs=1e-6)
        assert values[f"val/recall/{kind}"] == pytest.approx(report[kind]["recall"], abs=1e-6)
    assert classification_report(FIXED_GOLD, FIXED_PREDICTED, digits=4, zero_division=0) in evaluator.report().text


def test_evaluator_equals_seqeval_on_real_tags_with_noise(shared_data: Path) -> None:
    frame = conll_frame(shared_data / "conll2003" / "valid.txt", 1500)
    gold = frame["tags"].tolist()
    names = sorted({tag for tags in gold for tag in tags})
    rng = random.Random(1)
    predicted = [[rng.choice(names) if rng.random() < 0.15 else tag for tag in tags] for tags in gold]
    _, values = run_evaluator(names, gold, predicted, detailed=True)
    assert_matches_seqeval(values, gold, predicted)
    report = classification_report(gold, predicted, output_dict=True)
    assert {key for key in values if key.startswith("val/f1/")} == {
        f"val/f1/{kind}" for kind in ("LOC", "MISC", "ORG", "PER")
    }
    for kind in ("LOC", "MISC", "ORG", "PER"):
        assert values[f"val/f1/{kind}"] == pytest.approx(report[kind]["f1-score"], abs=1e-6)
    _, brief = run_evaluator(names, gold, predicted, detailed=False)
    assert sorted(brief) == ["val/entity_f1", "val/entity_precision", "val/entity_recall", "val/token_accuracy"]


# --- prediction records -------------------------------------------------------------------------------
def predict_records(dataset: TokenizedDataset, label_names: list[str], seed: int) -> list[dict]:
    """Records from random logits that favour entity tags, batch by batch as ``predict`` produces them."""
    collator = DynamicPaddingCollator(0, 8, TASK.padded_columns)
    head = TASK.build_head(8, len(label_names), HeadOptions(dropout=0.0))
    generator = torch.Generator().manual_seed(seed)
    outputs = []
    for start in range(0, len(dataset), 5):
        batch = collator([dataset[index] for index in range(start, min(start + 5, len(dataset)))])
        outputs.append(
            head.predict(torch.randn(*batch["input_ids"].shape, len(label_names), generator=generator), batch)
        )
    merged = {key: torch.cat([output[key] for output in outputs]) for key in outputs[0]}
    return list(TASK.prediction_records(merged, label_names, dataset))


def check_entities(record: dict, text: str) -> None:
    assert [(e["type"], e["start_word"], e["end_word"] - 1) for e in record["entities"]] == get_entities(record["tags"])
    for entity in record["entities"]:
        assert text[entity["start_char"] : entity["end_char"]] == entity["text"]
        assert entity["text"].startswith(record["tokens"][entity["start_word"]])
        assert entity["text"].endswith(record["tokens"][entity["end_word"] - 1])
        assert 0 < entity["score"] < 1


def test_prediction_entities_carry_character_offsets_into_the_raw_text(minilm_tokenizer) -> None:
    texts = [
        "Angela Merkel visited the U.S.-based Müller GmbH in  New York on Tuesday, 3.5% up.",
        "",
        "Peter Blackburn\tmet EU officials in Brussels (Belgium) " * 4,
        '東京 and Zürich; naïve café-goers said: "no".',
    ]
    frame = pd.DataFrame({"text": texts, "row": range(len(texts))})
    dataset = encode(frame, minilm_tokenizer, DataSpec(max_length=16, window_stride=4), labelled=False)
    assert len(dataset) > len(texts)  # windows
    records = predict_records(dataset, ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"], seed=0)
    assert [record["row"] for record in records] == [0, 1, 2, 3]
    assert records[1] == {"row": 1, "tokens": [], "tags": [], "entities": []}
    assert records[0]["tokens"][:8] == ["Angela", "Merkel", "visited", "the", "U", ".", "S", "."]
    assert sum(len(record["entities"]) for record in records) > 10
    for record, text in zip(records, texts, strict=True):
        assert None not in record["tags"] and len(record["tags"]) == len(record["tokens"])
        check_entities(record, text)


def test_prediction_entities_of_word_input_index_the_words_joined_by_spaces(valid_frame, minilm_tokenizer) -> None:
    frame = valid_frame.head(40)[["tokens", "row"]]
    dataset = encode(frame, minilm_tokenizer, DataSpec(max_length=16, window_stride=4), labelled=False)
    records = predict_records(dataset, ["B-LOC", "B-ORG", "I-LOC", "I-ORG", "O"], seed=1)
    assert [record["tokens"] for record in records] == frame["tokens"].tolist()
    assert sum(len(record["entities"]) for record in records) > 20
    for record in records:
        check_entities(record, " ".join(record["tokens"]))


# --- end to end ----------------------------------------------------------------------------------------
def conll_head(source: Path, target: Path, sentences: int) -> Path:
    """The first ``sentences`` sentences of a CoNLL file, its lines copied as they are."""
    frame = read_conll(str(source), str(source))
    last = frame.iloc[sentences - 1]
    lines = source.read_text(encoding="utf-8").split("\n")[: last["line"] - 1 + len(last["tokens"])]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def test_fit_test_and_predict_on_conll_sentences(
    shared_data: Path, tiny_model_dir: Path, cli, run_dir: Path, lightning_messages: list[str]
) -> None:
    conll = shared_data / "conll2003"
    train = conll_head(conll / "train.txt", run_dir / "train.txt", 400)
    validation = conll_head(conll / "valid.txt", run_dir / "valid.txt", 100)
    test = conll_head(conll / "test.txt", run_dir / "test.txt", 100)
    short = ("--data.max_length", 24, "--data.window_stride", 4, "--trainer.enable_progress_bar", "false")
    exit_ = cli(
        "fit", "--config", CONFIGS / "quickstart.yaml", "--data", CONFIGS / "data" / "conll2003.yaml",
        "--data.where", "null", "--data.train_file", train, "--data.validation_file", validation,
        "--data.test_file", test, "--model.model_name", tiny_model_dir, "--model.learning_rate", "3e-3",
        "--data.batch_size", 16, "--trainer.max_epochs", 3, "--trainer.enable_model_summary", "false",
        "--experiment", "ner", *short,
    )  # fmt: skip
    assert exit_ is None, exit_
    assert any("sentences longer than max_length 24 were split into" in message for message in lightning_messages)
    version = run_dir / "checkpoints" / "ner" / "version_0"
    metrics = pd.read_csv(version / "metrics.csv").dropna(subset=["val/entity_f1"])
    assert metrics["epoch"].tolist() == [0, 1, 2]
    assert metrics["val/loss"].iloc[-1] < metrics["val/loss"].iloc[0]
    assert metrics["val/entity_f1"].max() > 0.05, "the tiny model learns some entities"
    (best,) = (version / "checkpoints").glob("best-*.ckpt")

    logger = ("--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir", "logs")
    assert cli("test", "--ckpt_path", best, "--data.test_file", test, *logger, *short) is None
    logged = pd.read_csv(run_dir / "logs" / "default" / "version_0" / "metrics.csv").ffill().iloc[-1]
    (report,) = [message for message in lightning_messages if "Test entity report" in message]
    assert {"LOC", "MISC", "ORG", "PER", "micro avg"} <= {line[:12].strip() for line in report.splitlines()}

    # Predictions on the test sentences reproduce the tested tags: seqeval on them gives the logged scores.
    output = run_dir / "predictions.jsonl"
    predict = ("predict", "--ckpt_path", best, "--data.predict_file", test, "--predictions.output_file", output)
    assert cli(*predict, "--trainer.logger", "false", *short) is None
    records = [json.loads(line) for line in output.read_text().splitlines()]
    gold = conll_frame(test)
    assert [record["row"] for record in records] == list(range(100))
    assert [record["tokens"] for record in records] == gold["tokens"].tolist()
    predicted = [record["tags"] for record in records]
    assert logged["test/entity_f1"] == pytest.approx(f1_score(gold["tags"].tolist(), predicted), abs=1e-6)
    for kind in ("LOC", "PER"):
        expected = classification_report(gold["tags"].tolist(), predicted, output_dict=True, zero_division=0)[kind]
        assert logged[f"test/f1/{kind}"] == pytest.approx(expected["f1-score"], abs=1e-6)
    for record in records:
        check_entities(record, " ".join(record["tokens"]))

    texts = pd.DataFrame({"text": ["Peter Blackburn met EU officials in Brussels.", "Japan beat Syria 2-1 in Al-Ain."]})
    texts.to_json(run_dir / "raw.jsonl", orient="records", lines=True)
    raw = ("predict", "--ckpt_path", best, "--data.predict_file", run_dir / "raw.jsonl", "--data.text_column", "text")
    assert cli(*raw, "--predictions.output_file", output, "--trainer.logger", "false", *short) is None
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["tokens"][:3] for record in records] == [["Peter", "Blackburn", "met"], ["Japan", "beat", "Syria"]]
    for record, text in zip(records, texts["text"], strict=True):
        check_entities(record, text)
