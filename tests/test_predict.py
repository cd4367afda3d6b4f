"""``bertcls predict``: input from any file or standard input, JSON Lines and CSV output in input order, top-k,
ids, the over-length report, input errors, and one ordered file from DDP ranks (their shares merged by row).

One tiny single-label model is fitted for the module; the multi-label and token outputs are checked by driving the
``PredictionWriter`` with their tasks' real heads and encoded splits.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CONFIGS, REPO_ROOT, run_bertcls_process, run_cli, separable_frame, write_frame

from bertcls.callbacks import PredictionWriter
from bertcls.data.collate import DynamicPaddingCollator
from bertcls.data.dataset import TokenizedDataset
from bertcls.data.encoding import encode_texts
from bertcls.data.sampler import LengthBucketBatchSampler
from bertcls.data.sources import ROW_COLUMN
from bertcls.data.stdin import parse_lines
from bertcls.errors import DataError, InputError
from bertcls.model.module import BertClassifier
from bertcls.tasks import DataSpec, HeadOptions
from bertcls.tasks.multi_label import MultiLabelTask
from bertcls.tasks.token import TokenTask
from bertcls.tasks.token.task import WORD_SCORES

LABELS = ("pos", "neg", "neutral")
MAX_LENGTH = 24
ROWS = 40

pytestmark = [
    pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used to create"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, real_words: list[str]) -> SimpleNamespace:
    """A briefly fitted 3-label model, and texts of 2 to 40 words in shuffled order (some past ``MAX_LENGTH``)."""
    folder = tmp_path_factory.mktemp("predict")
    train = write_frame(separable_frame(real_words, 96, seed=1, labels=LABELS), folder / "train.csv")
    fit = (
        "fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", tiny_model_dir, "--model.learning_rate",
        "3e-3", "--data.train_file", train, "--data.where", "null", "--data.max_length", 32, "--data.batch_size", 16,
        "--trainer.max_epochs", 1, "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
        "false", "--experiment", "predict",
    )  # fmt: skip
    with working_directory(folder):
        assert run_cli(*fit) is None
    rng = random.Random(7)
    texts = [" ".join(rng.sample(real_words, rng.randint(2, 40))) for _ in range(ROWS)]
    return SimpleNamespace(
        folder=folder,
        checkpoint=folder / "checkpoints" / "predict" / "version_0" / "checkpoints" / "last.ckpt",
        texts=texts,
        file=write_frame(pd.DataFrame({"text": texts}), folder / "texts.csv"),
    )


def predict(checkpoint: Path, source: object, output: Path, *extra: object) -> SystemExit | None:
    """``bertcls predict`` in-process, without a logger, with small batches (so the bucketing reorders rows)."""
    return run_cli(
        "predict", "--ckpt_path", checkpoint, "--data.predict_file", source, "--predictions.output_file", output,
        "--data.max_length", MAX_LENGTH, "--data.batch_size", 4, "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", *extra,
    )  # fmt: skip


def test_max_length_defaults_to_the_checkpoints(
    model: SimpleNamespace, tmp_path: Path, minilm_tokenizer, lightning_messages: list[str]
) -> None:
    """Without --data.max_length, predict cuts texts where training did (32, saved in the checkpoint), not at 128."""
    output = tmp_path / "out.jsonl"
    assert run_cli(
        "predict", "--ckpt_path", model.checkpoint, "--data.predict_file", model.file, "--predictions.output_file",
        output, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
    ) is None  # fmt: skip
    over = sum(len(ids) > 32 for ids in minilm_tokenizer(model.texts)["input_ids"])
    assert over > 0
    assert any(f"{over} of {ROWS} inputs" in message and "max_length=32 " in message for message in lightning_messages)
    assert len(read_jsonl(output)) == ROWS


def test_bf16_autocast_on_the_cpu_keeps_the_predictions(model: SimpleNamespace, tmp_path: Path) -> None:
    """``--trainer.precision bf16-mixed`` (the CPU speed lever of docs/inference.md): same rows, near probabilities."""
    exact, fast = tmp_path / "fp32.jsonl", tmp_path / "bf16.jsonl"
    assert predict(model.checkpoint, model.file, exact) is None
    assert predict(model.checkpoint, model.file, fast, "--trainer.precision", "bf16-mixed") is None
    exact_records, fast_records = read_jsonl(exact), read_jsonl(fast)
    assert [record["row"] for record in fast_records] == list(range(ROWS))
    names = list(exact_records[0]["probabilities"])
    p32 = np.array([[record["probabilities"][name] for name in names] for record in exact_records])
    p16 = np.array([[record["probabilities"][name] for name in names] for record in fast_records])
    difference = np.abs(p32 - p16).max()
    assert 0 < difference < 2e-2, "bf16 must change the arithmetic, and only a little"
    top_two = np.sort(p32, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > 2 * difference  # labels no rounding can flip
    assert clear.sum() > ROWS // 2
    labels32 = np.array([record["label"] for record in exact_records])
    labels16 = np.array([record["label"] for record in fast_records])
    assert (labels32[clear] == labels16[clear]).all()


def test_int8_quantization_keeps_the_labels(
    model: SimpleNamespace, tmp_path: Path, lightning_messages: list[str]
) -> None:
    """``--model.quantize int8`` (the lever of CPUs without bf16 units): the linear layers run in int8, every row
    is predicted, the probabilities move a little and the labels stay."""
    exact, fast = tmp_path / "fp32.jsonl", tmp_path / "int8.jsonl"
    assert predict(model.checkpoint, model.file, exact) is None
    assert predict(model.checkpoint, model.file, fast, "--model.quantize", "int8") is None
    assert any("13 linear layers quantized to int8" in message for message in lightning_messages)
    exact_records, fast_records = read_jsonl(exact), read_jsonl(fast)
    assert [record["row"] for record in fast_records] == list(range(ROWS))
    names = list(exact_records[0]["probabilities"])
    p32 = np.array([[record["probabilities"][name] for name in names] for record in exact_records])
    p8 = np.array([[record["probabilities"][name] for name in names] for record in fast_records])
    assert 0 < np.abs(p32 - p8).max() < 5e-2, "int8 must change the arithmetic, and only a little"
    assert [r["label"] for r in exact_records] == [r["label"] for r in fast_records]


def test_int8_onnx_export_runs_in_onnx_runtime_with_the_same_labels(
    model: SimpleNamespace, tmp_path: Path, minilm_tokenizer
) -> None:
    """``bertcls export --onnx-only --quantize int8``: model.int8.onnx (int8 weights, a quarter of the size) beside
    model.onnx, with the checkpoint's labels on export's sentences and on the texts here; without an ONNX output
    the option is refused."""
    pytest.importorskip("onnxruntime")
    from bertcls.commands.export import export
    from bertcls.export.onnx_int8 import label_agreement

    exit_ = run_cli("export", model.checkpoint, "--output", tmp_path / "hf", "--quantize", "int8")
    assert isinstance(exit_, SystemExit) and "no ONNX model was asked for: add --onnx" in str(exit_.code)
    result = export([str(model.checkpoint), "--output", str(tmp_path / "onnx"), "--onnx-only", "--quantize", "int8"])
    assert result["int8_agreement"] == 1.0
    int8 = tmp_path / "onnx" / "model.int8.onnx"
    assert int8.stat().st_size < 0.5 * (tmp_path / "onnx" / "model.onnx").stat().st_size
    classifier = BertClassifier.load_from_checkpoint(model.checkpoint, map_location="cpu").eval()
    encoded = minilm_tokenizer(model.texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    batch = dict(encoded)
    assert label_agreement(classifier, int8, batch) == (ROWS, ROWS)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def direct_probabilities(model: SimpleNamespace, tokenizer) -> tuple[np.ndarray, list[str]]:
    """Each text's probabilities from a plain forward pass of the reloaded model (one padded batch, input order)."""
    classifier = BertClassifier.load_from_checkpoint(model.checkpoint, map_location="cpu").eval()
    encoded = tokenizer(model.texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    with torch.no_grad():
        return classifier(dict(encoded)).softmax(-1).numpy(), list(classifier.hparams.label_names)


# --- output: formats, order, top-k, ids, over-length report ------------------------------------------------
def test_jsonl_and_csv_rows_follow_the_input_order(
    model: SimpleNamespace, tmp_path: Path, minilm_tokenizer, lightning_messages: list[str]
) -> None:
    lengths = [len(ids) for ids in minilm_tokenizer(model.texts)["input_ids"]]
    assert np.argsort(lengths, kind="stable").tolist() != list(range(ROWS)), "the sampler predicts out of order"
    jsonl, table = tmp_path / "out.jsonl", tmp_path / "out.csv"
    assert predict(model.checkpoint, model.file, jsonl) is None
    assert predict(model.checkpoint, model.file, table) is None
    expected, names = direct_probabilities(model, minilm_tokenizer)
    records = read_jsonl(jsonl)
    assert [list(record) for record in records] == [["id", "row", "label", "score", "probabilities"]] * ROWS
    assert [(record["id"], record["row"]) for record in records] == [(row, row) for row in range(ROWS)]
    written = np.array([[record["probabilities"][name] for name in names] for record in records])
    np.testing.assert_allclose(written, expected, atol=1e-6, rtol=0)  # row i is text i: rounded to 6 decimals
    assert [record["label"] for record in records] == [names[best] for best in expected.argmax(-1)]
    assert [record["score"] for record in records] == [record["probabilities"][record["label"]] for record in records]

    frame = pd.read_csv(table)
    assert list(frame.columns) == ["id", "row", "label", "score", *(f"p_{name}" for name in names)]
    assert frame["id"].tolist() == list(range(ROWS))
    assert frame["label"].tolist() == [record["label"] for record in records]
    np.testing.assert_array_equal(frame[[f"p_{name}" for name in names]].to_numpy(), written)

    # The over-length report: one line after predict, counting the truncated rows, with the longest length.
    over = sum(length > MAX_LENGTH for length in lengths)
    assert 0 < over < ROWS
    report = (
        f"{model.file}: {over} of {ROWS} inputs ({100 * over / ROWS:.1f}%) are longer than max_length={MAX_LENGTH} "
        f"tokens (the longest has {max(lengths)}) and were cut to {MAX_LENGTH} tokens"
    )
    reports = [message for message in lightning_messages if message.startswith(report)]
    assert len(reports) == 2  # once per predict run
    written_at = lightning_messages.index(f"Predictions for {ROWS} rows written to {jsonl}")
    assert lightning_messages.index(reports[0]) > written_at, "reported after predicting"


def test_top_k_lists_the_most_probable_labels(model: SimpleNamespace, tmp_path: Path) -> None:
    jsonl, table = tmp_path / "top.jsonl", tmp_path / "top.csv"
    for output in (jsonl, table):
        assert predict(model.checkpoint, model.file, output, "--predictions.top_k", 2) is None
    for record in read_jsonl(jsonl):
        ranked = sorted(record["probabilities"].items(), key=lambda item: -item[1])[:2]
        assert record["top_k"] == [{"label": label, "score": score} for label, score in ranked]
        assert (record["label"], record["score"]) == ranked[0]
    frame = pd.read_csv(table)
    assert list(frame.columns)[:6] == ["id", "row", "label", "score", "label_2", "score_2"]
    assert frame["label_2"].tolist() == [record["top_k"][1]["label"] for record in read_jsonl(jsonl)]
    # More than the labels: all of them, best first.
    assert predict(model.checkpoint, model.file, jsonl, "--predictions.top_k", 10) is None
    assert all(len(record["top_k"]) == len(LABELS) for record in read_jsonl(jsonl))


def test_ids_come_from_the_id_column_and_must_be_unique(model: SimpleNamespace, tmp_path: Path) -> None:
    ids = [f"doc-{index:03d}" for index in range(ROWS)]
    source = write_frame(pd.DataFrame({"doc_id": ids, "text": model.texts}), tmp_path / "ids.jsonl")
    output = tmp_path / "ids.jsonl.out.jsonl"
    assert predict(model.checkpoint, source, output, "--data.id_column", "doc_id") is None
    records = read_jsonl(output)
    assert [record["id"] for record in records] == ids
    assert [record["row"] for record in records] == list(range(ROWS))

    repeated = ids[:]
    repeated[5] = repeated[30] = "doc-x"
    source = write_frame(pd.DataFrame({"doc_id": repeated, "text": model.texts}), tmp_path / "repeated.csv")
    exit_ = predict(model.checkpoint, source, output, "--data.id_column", "doc_id")
    assert f"{source}: repeated ids ['doc-x'] in data.id_column 'doc_id' at row 6, 31" in str(exit_.code)
    exit_ = predict(model.checkpoint, source, output, "--data.id_column", "key")
    assert "column(s) 'key' not found. Available columns: doc_id, text" in str(exit_.code)


# --- standard input ----------------------------------------------------------------------------------------
def test_standard_input_predicts_like_a_file(model: SimpleNamespace, tmp_path: Path) -> None:
    from_file = tmp_path / "from-file.jsonl"
    assert predict(model.checkpoint, model.file, from_file) is None
    from_stdin = tmp_path / "from-stdin.jsonl"
    command = [
        sys.executable, "-m", "bertcls", "predict", "--ckpt_path", model.checkpoint, "--data.predict_file", "-",
        "--predictions.output_file", from_stdin, "--data.max_length", MAX_LENGTH, "--data.batch_size", 4,
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    lines = "\r\n".join(model.texts).encode("utf-8")  # Windows line ends, no final one
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    environment = os.environ | {"PYTHONPATH": str(REPO_ROOT / "tests"), "TMPDIR": str(temporary)}
    environment.pop("PL_GLOBAL_SEED", None)
    result = subprocess.run(list(map(str, command)), input=lines, cwd=tmp_path, env=environment, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert from_stdin.read_text() == from_file.read_text()
    assert "standard input: " in result.stderr.decode(), "the over-length report names standard input"
    assert not list(temporary.glob("bertcls-stdin-*")), "the copy of standard input is removed"


def test_standard_input_errors_name_the_line(model: SimpleNamespace, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a fine text\n   \nanother\n")))
    exit_ = predict(model.checkpoint, "-", tmp_path / "out.jsonl")
    assert str(exit_.code).startswith("bertcls: data error: standard input: line 2 is blank.")
    with pytest.raises(DataError, match=r"line 2 has 2 tabs, but a text pair needs exactly one tab"):
        parse_lines(b"a\tb\nc\td\te\n", width=2)
    with pytest.raises(DataError, match=r"line 1: the second text of the pair is blank"):
        parse_lines(b"a\t \n", width=2)
    with pytest.raises(DataError, match=r"standard input is empty"):
        parse_lines(b"", width=1)
    with pytest.raises(
        DataError, match=r"line 2 \(byte offset 12\) holds the byte 0xe9\. Convert the input .* `iconv -f cp1252"
    ):
        parse_lines(b"\xef\xbb\xbfhello\ncaf\xe9\n", width=1)
    assert parse_lines("\ufeffone\r\ntwo\tand\n".encode(), width=2 - 1) == [["one"], ["two\tand"]]
    assert parse_lines(b"one\ttwo\n", width=2) == [["one", "two"]]


# --- input errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("blank.csv", b'text\nfine\n""\nok\n"   "\n', "empty text in column 'text' at row 2, 4 (rows counted from 1"),
        ("blank.jsonl", b'{"text": "fine"}\n{"text": " "}\n', "empty text in column 'text' at row 2 (rows counted"),
        ("latin1.csv", b"text\nfine text\ncaf\xe9 au lait\n", "line 3 (byte offset 18) holds the byte 0xe9"),
        ("latin1.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "line 2 (byte offset 28) holds the byte 0xe9"),
        ("column.csv", b"review,stars\ngood,5\n", "column(s) 'text' not found. Available columns: review, stars"),
    ],
)
def test_bad_input_ends_predict_with_the_file_the_row_and_the_fix(
    model: SimpleNamespace, tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    exit_ = predict(model.checkpoint, source, tmp_path / "out.jsonl")
    message = str(exit_.code)
    assert message.startswith(f"bertcls: data error: {source}: "), message
    assert expected in message
    if "latin1" in name:
        assert f"iconv -f cp1252 -t utf-8 {source} > converted{source.suffix}" in message


def test_output_suffix_and_top_k_are_checked_before_predicting(model: SimpleNamespace, tmp_path: Path) -> None:
    exit_ = predict(model.checkpoint, model.file, tmp_path / "out.txt")
    assert "cannot tell the output format from the suffix '.txt'; end the name with .jsonl or .csv" in str(exit_.code)
    exit_ = predict(model.checkpoint, model.file, tmp_path / "out.csv", "--predictions.top_k", 0)
    assert "--predictions.top_k must be at least 1, got 0" in str(exit_.code)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(task=MultiLabelTask()))
    with pytest.raises(InputError, match="top_k applies to the single_label and pair tasks, not to 'multi_label'"):
        PredictionWriter(top_k=3).setup(trainer, None, "predict")


# --- multi-label and token output, through the writer ------------------------------------------------------
def write(dataset: TokenizedDataset, task, head, batches: list[dict], output: Path, rank: int = 0, ranks: int = 1):
    """Run ``PredictionWriter`` as rank ``rank`` of ``ranks`` on the head's predictions for ``batches``."""
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(datasets={"predict": dataset}, task=task),
        world_size=ranks,
        global_rank=rank,
        is_global_zero=rank == 0,
        strategy=SimpleNamespace(barrier=lambda name: None),
    )
    module = SimpleNamespace(task=task, head=head, hparams=SimpleNamespace(label_names=NAMES[task.name]))
    predictions = [head.predict(batch["logits"], batch) for batch in batches]
    PredictionWriter(str(output)).write_on_epoch_end(trainer, module, predictions, None)


NAMES = {"multi_label": ["anger", "joy", "love"], "token": ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]}


def test_multi_label_output_holds_the_chosen_labels_and_the_thresholds_beside_it(tmp_path: Path, minilm_tokenizer):
    task = MultiLabelTask()
    frame = pd.DataFrame({"text": ["one", "two words", "three words here"], ROW_COLUMN: [0, 1, 2]})
    dataset = TokenizedDataset(encode_texts(frame, minilm_tokenizer, "text", None, 16, None, "data"))
    head = task.build_head(4, 3, HeadOptions(dropout=0.0))
    head.thresholds.copy_(torch.tensor([0.3, 0.6, 0.9]))
    logits = torch.logit(torch.tensor([[0.35, 0.55, 0.95], [0.1, 0.7, 0.5], [0.25, 0.65, 0.2]]))
    batches = [
        {"rows": torch.tensor([2, 0]), "logits": logits[[2, 0]]},
        {"rows": torch.tensor([1]), "logits": logits[[1]]},
    ]
    write(dataset, task, head, batches, tmp_path / "out.csv")
    write(dataset, task, head, batches, tmp_path / "out.jsonl")
    table = pd.read_csv(tmp_path / "out.csv")
    assert list(table.columns) == ["id", "row", "labels", "p_anger", "p_joy", "p_love"]
    assert table["labels"].map(json.loads).tolist() == [["anger", "love"], ["joy"], ["joy"]]
    assert table["p_love"].tolist() == pytest.approx([0.95, 0.5, 0.2], abs=1e-6)
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [(record["id"], record["labels"]) for record in records] == [
        (0, ["anger", "love"]),
        (1, ["joy"]),
        (2, ["joy"]),
    ]
    assert all(list(record) == ["id", "row", "labels", "probabilities"] for record in records)
    for output in ("out.csv", "out.jsonl"):
        sidecar = json.loads((tmp_path / f"{output}.thresholds.json").read_text())
        assert sidecar == {"thresholds": pytest.approx({"anger": 0.3, "joy": 0.6, "love": 0.9})}


def token_batches(dataset: TokenizedDataset, rank: int, ranks: int) -> list[dict]:
    """Rank ``rank``'s collated batches, as the bucketed sampler deals them, with logits that depend on the word
    pieces only (so every example gets the same logits whichever rank and batch it lands in)."""
    table = torch.randn(40000, len(NAMES["token"]), generator=torch.Generator().manual_seed(0))
    sampler = LengthBucketBatchSampler(
        lengths=dataset.lengths, max_batch_size=3, shuffle=False, num_replicas=ranks, rank=rank
    )
    collate = DynamicPaddingCollator(0, None, TokenTask.padded_columns)
    batches = [collate([dataset[index] for index in indices]) for indices in sampler]
    return [batch | {"logits": table[batch["input_ids"]]} for batch in batches]


def test_token_rows_split_across_ranks_merge_into_the_one_process_output(tmp_path: Path, minilm_tokenizer) -> None:
    texts = [
        "Angela Merkel visited the Müller GmbH in New York on Tuesday with Peter Blackburn of Brussels.",
        "Japan beat Syria 2-1 in Al-Ain.",
        "Peter Blackburn met EU officials in Brussels (Belgium) and flew on to Paris, London and Berlin " * 2,
        "Zürich.",
        "The delegates from Geneva, Vienna and Prague met in Warsaw before driving to Krakow and Lviv.",
    ]
    task = TokenTask()
    frame = pd.DataFrame({"text": texts, ROW_COLUMN: range(len(texts))})
    encoded = task.encode(frame, minilm_tokenizer, DataSpec(max_length=12, window_stride=3), None, "data")
    dataset = TokenizedDataset(encoded)
    assert len(dataset) > 2 * len(texts)  # windows
    head = task.build_head(8, len(NAMES["token"]), HeadOptions(dropout=0.0))
    write(dataset, task, head, token_batches(dataset, 0, 1), tmp_path / "one.jsonl")
    # Some sentences have windows on both ranks: their records from each rank are partial.
    shares = [token_batches(dataset, rank, 2) for rank in (0, 1)]
    for batches in shares:
        outputs = [head.predict(batch["logits"], batch) for batch in batches]
        merged = {key: torch.cat([output[key] for output in outputs]) for key in outputs[0]}
        assert any(WORD_SCORES in record for record in task.prediction_records(merged, NAMES["token"], dataset))
    write(dataset, task, head, shares[1], tmp_path / "two.jsonl", rank=1, ranks=2)
    write(dataset, task, head, shares[0], tmp_path / "two.jsonl", rank=0, ranks=2)
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"], "shares removed"
    records = read_jsonl(tmp_path / "one.jsonl")
    assert sum(len(record["entities"]) for record in records) > 3
    for record, text in zip(records, texts, strict=True):
        assert None not in record["tags"]
        for entity in record["entities"]:
            assert text[entity["start_char"] : entity["end_char"]] == entity["text"]
    write(dataset, task, head, token_batches(dataset, 0, 1), tmp_path / "one.csv")
    table = pd.read_csv(tmp_path / "one.csv")
    assert list(table.columns) == ["id", "row", "tokens", "tags", "entities"]
    assert table["entities"].map(json.loads).tolist() == [record["entities"] for record in records]


# --- DDP ---------------------------------------------------------------------------------------------------
def test_ddp_ranks_write_one_file_equal_to_one_process(model: SimpleNamespace, tmp_path: Path) -> None:
    """Two gloo ranks, each predicting one example per batch (so every forward pass has the same shapes as in one
    process: the outputs are bitwise equal), merged into one file equal line for line to a one-process run."""
    common = ["--data.eval_batch_size", 1, "--trainer.accelerator", "cpu"]
    single = tmp_path / "single.csv"
    assert predict(model.checkpoint, model.file, single, *common, "--predictions.top_k", 2) is None
    merged = tmp_path / "ddp" / "merged.csv"
    ddp = ["--trainer.devices", 2, "--trainer.strategy", "lightning.pytorch.strategies.DDPStrategy"]
    result = run_bertcls_process(
        "predict", "--ckpt_path", model.checkpoint, "--data.predict_file", model.file, "--predictions.output_file",
        merged, "--data.max_length", MAX_LENGTH, "--data.batch_size", 4, "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--predictions.top_k", 2, *common, *ddp,
        "--trainer.strategy.timeout", "0:02:00", cwd=tmp_path, env={"BERTCLS_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    assert merged.read_text().splitlines() == single.read_text().splitlines()
    assert [path.name for path in merged.parent.iterdir()] == ["merged.csv"], "the shares are removed"
    assert (result.stdout + result.stderr).count(f"Predictions for {ROWS} rows written to {merged}") == 1


# --- a checkpoint for other data ---------------------------------------------------------------------------
def test_a_checkpoint_for_another_task_or_label_set_is_refused(model: SimpleNamespace, tmp_path: Path) -> None:
    conll = tmp_path / "ner.conll"
    conll.write_text("EU B-ORG\nrejects O\n\nPeter B-PER\n\n")
    exit_ = run_cli("test", "--ckpt_path", model.checkpoint, "--data.task", "token", "--data.test_file", conll)
    message = str(exit_.code)
    assert message.startswith(f"bertcls: error: --ckpt_path {model.checkpoint} is a model for task 'single_label'")
    assert "data.task is 'token'" in message and "['neg', 'neutral', 'pos']" in message

    stars = write_frame(pd.DataFrame({"text": model.texts[:4], "label": [1, 5, 3, 5]}), tmp_path / "stars.csv")
    exit_ = run_cli("test", "--ckpt_path", model.checkpoint, "--data.test_file", stars, "--trainer.logger", "false")
    message = str(exit_.code)
    assert message.startswith(f"bertcls: data error: {stars}: unknown label(s) ['1', '3', '5'] in column 'label'")
    assert "one of the training data's labels ['neg', 'neutral', 'pos']" in message
