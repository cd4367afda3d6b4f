"""The multi-label task: label formats, encoding, head, threshold tuning, metrics and prediction records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CONFIGS, SHARED_DATA, write_frame
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score

from bertcls.data.collate import DynamicPaddingCollator
from bertcls.data.dataset import TokenizedDataset
from bertcls.data.labels import LabelVocabulary
from bertcls.data.sources import ROW_COLUMN, ReadOptions, SplitSource, read_source
from bertcls.errors import DataError
from bertcls.model.module import BertClassifier
from bertcls.tasks import DataSpec, HeadOptions, get_task
from bertcls.tasks.multi_label import MultiLabelHead, MultiLabelTask, best_thresholds, decision_scores

pytestmark = [
    pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used to create"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

TEXTS = ["a quiet film", "loud and long", "the cast shines", "nothing happens", "a sharp script", "too long"]
LABELS = [["b", "c"], [], ["a"], ["a", "b", "c"], ["c"], ["b"]]  # the second row has no labels
NAMES = ("a", "b", "c")
EXPECTED = [[int(name in labels) for name in NAMES] for labels in LABELS]


@pytest.fixture
def task() -> MultiLabelTask:
    task = get_task("multi_label")
    assert isinstance(task, MultiLabelTask) and task.monitor == "val/macro_f1"
    return task


def labelled_frame(labels: list, column: str = "labels") -> pd.DataFrame:
    return pd.DataFrame({"text": TEXTS[: len(labels)], column: labels, ROW_COLUMN: range(len(labels))})


def encode_file(task: MultiLabelTask, tokenizer, path: Path, spec: DataSpec):
    """Read ``path`` as the data module does, build the vocabulary from it and encode it."""
    frame = read_source(SplitSource(str(path)))
    frame = frame[[*task.columns(spec, True, list(frame.columns)), ROW_COLUMN]]
    vocabulary = task.vocabulary(frame, spec, str(path))
    return vocabulary, task.encode(frame, tokenizer, spec, vocabulary, str(path))


# --- label formats and encoding ---------------------------------------------------------------------
def test_the_three_label_formats_give_identical_multi_hot_labels(
    task: MultiLabelTask, minilm_tokenizer, tmp_path: Path
) -> None:
    text = pd.DataFrame({"text": TEXTS})
    # Label columns in another order than the sorted label names: each is placed by its name.
    columns = pd.DataFrame({name: [int(name in labels) for labels in LABELS] for name in ("c", "a", "b")})
    files = {
        "JSON Lines lists": (text.assign(labels=LABELS), "labels.jsonl", DataSpec(label_column="labels")),
        "Parquet lists": (text.assign(labels=LABELS), "labels.parquet", DataSpec(label_column="labels")),
        "delimited strings": (
            text.assign(labels=[",".join(labels) for labels in LABELS]),  # "" (read as missing): no labels
            "labels.csv",
            DataSpec(label_column="labels"),
        ),
        "other delimiter": (
            text.assign(labels=[" | ".join(labels) for labels in LABELS]),
            "labels.tsv",
            DataSpec(label_column="labels", label_delimiter="|"),
        ),
        "0/1 columns": (pd.concat([text, columns], axis=1), "columns.csv", DataSpec(label_columns=("c", "a", "b"))),
        "true/false columns": (
            pd.concat([text, columns.astype(bool)], axis=1),
            "columns.jsonl",
            DataSpec(label_columns=("c", "a", "b")),
        ),
    }
    reference_ids = minilm_tokenizer(TEXTS)["input_ids"]
    for kind, (frame, name, spec) in files.items():
        vocabulary, encoded = encode_file(task, minilm_tokenizer, write_frame(frame, tmp_path / name), spec)
        # Label columns keep their order (c, a, b); labels found in a column are sorted (a, b, c).
        order = [NAMES.index(label) for label in vocabulary.names]
        assert sorted(vocabulary.names) == list(NAMES), kind
        assert vocabulary.names == (spec.label_columns or NAMES), kind
        assert [[hot[index] for index in order] for hot in EXPECTED] == encoded.table["labels"], kind
        assert encoded.table["input_ids"] == reference_ids, kind
        assert encoded.table[ROW_COLUMN] == list(range(len(TEXTS))), kind
        assert str(encoded.table.features["labels"].feature.dtype) == "uint8", kind
        assert encoded.meta["notes"] == [f"{tmp_path / name}: 1 of 6 rows have no labels (all-negative examples)."]


def test_multi_hot_labels_are_collated_and_counted(task: MultiLabelTask, minilm_tokenizer) -> None:
    vocabulary = LabelVocabulary.from_names(NAMES)
    encoded = task.encode(labelled_frame(LABELS), minilm_tokenizer, DataSpec(label_column="labels"), vocabulary, "x")
    dataset = TokenizedDataset(encoded)
    batch = DynamicPaddingCollator(minilm_tokenizer.pad_token_id)([dataset[index] for index in range(len(dataset))])
    assert batch["labels"].dtype == torch.uint8
    assert batch["labels"].tolist() == EXPECTED
    counts, total = task.label_counts(dataset, len(NAMES))
    assert counts.tolist() == [2, 3, 3] and total == 6


def test_predict_split_has_no_labels(task: MultiLabelTask, minilm_tokenizer) -> None:
    spec = DataSpec(label_column="labels", text_pair_column="context")
    assert task.columns(spec, False, ["text", "context"]) == ["text", "context"]
    assert task.columns(spec, True, ["text", "context", "labels"]) == ["text", "context", "labels"]
    frame = labelled_frame(LABELS).assign(context="a second text")
    encoded = task.encode(frame, minilm_tokenizer, spec, None, "x")
    assert "labels" not in encoded.table.column_names
    assert encoded.table["token_type_ids"][0].count(1) > 0  # the pair was encoded


def test_goemotions_label_ids_index_the_emotion_names(task: MultiLabelTask, minilm_tokenizer, shared_data) -> None:
    folder = shared_data / "goemotions"
    emotions = (folder / "emotions.txt").read_text(encoding="utf-8").split("\n")
    assert len(emotions) == 28 and emotions[2] == "anger" and emotions[27] == "neutral"
    options = ReadOptions(column_names=("text", "labels", "comment_id"))
    frame = read_source(SplitSource(str(folder / "train.tsv")), options).head(300)
    spec = DataSpec(label_column="labels", labels_are_indices=True, max_length=64)
    encoded = task.encode(frame, minilm_tokenizer, spec, LabelVocabulary.from_names(emotions), str(folder))
    decoded = [{emotions[index] for index, on in enumerate(row) if on} for row in encoded.table["labels"]]
    expected = [{emotions[int(index)] for index in str(ids).split(",")} for ids in frame["labels"]]
    assert decoded == expected
    assert decoded[2] == {"anger"}  # "WHY THE FUCK IS BAYLESS ISOING", label 2
    assert sum(len(labels) > 1 for labels in decoded) > 20
    assert encoded.table[ROW_COLUMN] == list(range(300))


@pytest.mark.parametrize(
    ("labels", "spec", "names", "expected"),
    [
        (["a,b", "c", "a,zzz"], DataSpec(label_column="labels"), NAMES, ["column 'labels'", "'zzz'", "row 3"]),
        (["0,1", "", "1,3"], DataSpec(label_column="labels", labels_are_indices=True), NAMES, ["'3'", "row 3"]),
        (["0", "-1", "2"], DataSpec(label_column="labels", labels_are_indices=True), NAMES, ["'-1'", "row 2"]),
    ],
    ids=["unknown label", "index out of range", "negative index"],
)
def test_bad_labels_name_the_file_and_rows(
    task: MultiLabelTask, minilm_tokenizer, labels: list, spec: DataSpec, names: tuple, expected: list[str]
) -> None:
    with pytest.raises(DataError) as error:
        task.encode(labelled_frame(labels), minilm_tokenizer, spec, LabelVocabulary.from_names(names), "data/dev.csv")
    message = str(error.value)
    assert message.startswith("data/dev.csv: ")
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ([0, 1, 2, 1], "['2'] at row 3"),
        (["1", "yes", "0", None], "['(empty)', 'yes'] at row 2, 4"),
        ([1, 0, None, 1], "['(empty)'] at row 3"),
    ],
    ids=["integer 2", "words", "missing value"],
)
def test_label_columns_must_hold_zeros_and_ones(
    task: MultiLabelTask, minilm_tokenizer, values: list, shown: str
) -> None:
    frame = pd.DataFrame({"text": TEXTS[:4], "a": [1, 0, 0, 1], "b": values, ROW_COLUMN: range(4)})
    spec = DataSpec(label_columns=("a", "b"))
    with pytest.raises(DataError) as error:
        task.encode(frame, minilm_tokenizer, spec, LabelVocabulary.from_names(["a", "b"]), "data/train.csv")
    message = str(error.value)
    assert message.startswith("data/train.csv: column 'b'")
    assert shown in message


def test_label_columns_must_match_the_label_names(task: MultiLabelTask, minilm_tokenizer) -> None:
    frame = pd.DataFrame({"text": TEXTS[:2], "a": [1, 0], "b": [0, 1], ROW_COLUMN: range(2)})
    with pytest.raises(DataError, match="are not the model's labels"):
        task.encode(frame, minilm_tokenizer, DataSpec(label_columns=("a", "b")), LabelVocabulary.from_names(NAMES), "x")


def test_training_data_without_any_label_is_an_error(task: MultiLabelTask) -> None:
    with pytest.raises(DataError, match="holds no labels at all"):
        task.label_values(labelled_frame(["", None, []]), DataSpec(label_column="labels"), "data/train.csv")


# --- head -----------------------------------------------------------------------------------------------
def test_balanced_weights_are_negatives_over_positives_clamped(task: MultiLabelTask) -> None:
    weights = task.balanced_weights(np.array([10, 50, 0, 99, 1, 2]), total=100)
    torch.testing.assert_close(weights, torch.tensor([9.0, 1.0, 100.0, 1.0, 99.0, 49.0]))


def test_head_loss_is_bce_with_logits_and_buffers_travel_in_the_state_dict(task: MultiLabelTask) -> None:
    torch.manual_seed(0)
    pos_weight = torch.tensor([1.0, 4.0, 20.0])
    head = task.build_head(8, 3, HeadOptions(dropout=0.0, loss_weights=pos_weight, threshold=0.4))
    logits, labels = torch.randn(16, 3), (torch.rand(16, 3) < 0.3).to(torch.uint8)
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)(logits, labels.float())
    torch.testing.assert_close(head.loss(logits, labels), expected)
    plain = task.build_head(8, 3, HeadOptions(dropout=0.0))
    torch.testing.assert_close(plain.loss(logits, labels), torch.nn.BCEWithLogitsLoss()(logits, labels.float()))
    assert not torch.allclose(head.loss(logits, labels), plain.loss(logits, labels))

    assert head.thresholds.tolist() == pytest.approx([0.4] * 3)
    head.thresholds.copy_(torch.tensor([0.2, 0.5, 0.9]))
    reloaded = task.build_head(8, 3, HeadOptions(dropout=0.0, loss_weights=torch.ones(3), threshold=0.4))
    reloaded.load_state_dict(head.state_dict())
    torch.testing.assert_close(reloaded.thresholds, torch.tensor([0.2, 0.5, 0.9]))
    torch.testing.assert_close(reloaded.loss_weights, pos_weight)


def test_predictions_use_the_head_thresholds_and_come_in_row_order(task: MultiLabelTask) -> None:
    head = task.build_head(4, 3, HeadOptions(dropout=0.0))
    head.thresholds.copy_(torch.tensor([0.3, 0.6, 0.9]))
    probabilities = torch.tensor([[0.35, 0.55, 0.95], [0.1, 0.7, 0.5], [0.25, 0.65, 0.2]])
    logits = torch.logit(probabilities)
    batches = [
        head.predict(logits[:2], {"rows": torch.tensor([2, 0])}),
        head.predict(logits[2:], {"rows": torch.tensor([1])}),
    ]
    outputs = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}
    records = list(task.prediction_records(outputs, list(NAMES), dataset=None))
    assert [record["row"] for record in records] == [0, 1, 2]
    assert [record["labels"] for record in records] == [["b"], ["b"], ["a", "c"]]
    assert records[2]["probabilities"] == pytest.approx({"a": 0.35, "b": 0.55, "c": 0.95}, abs=1e-6)


# --- evaluation ---------------------------------------------------------------------------------------
def random_predictions(rows: int, rates: list[float], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Informative random logits and multi-hot targets (uint8) with the given positive rate per label."""
    generator = np.random.default_rng(seed)
    targets = generator.random((rows, len(rates))) < np.array(rates)
    logits = generator.normal(size=targets.shape) + 1.5 * targets
    return torch.tensor(logits, dtype=torch.float), torch.tensor(targets, dtype=torch.uint8)


def evaluate(task: MultiLabelTask, head: MultiLabelHead, logits: torch.Tensor, targets: torch.Tensor, **kwargs):
    names = [f"label{index}" for index in range(targets.shape[1])]
    evaluator = task.evaluator(names, **kwargs)
    for start in range(0, len(logits), 64):  # in batches, as the LightningModule does
        evaluator.update(logits[start : start + 64], {"labels": targets[start : start + 64]}, head)
    return evaluator


def test_metrics_equal_scikit_learns(task: MultiLabelTask, tmp_path: Path) -> None:
    logits, targets = random_predictions(300, [0.1, 0.3, 0.5, 0.05, 0.2], seed=0)
    assert targets.sum(dim=0).min() > 0
    head = task.build_head(4, 5, HeadOptions(dropout=0.0, threshold=0.5))
    thresholds = torch.tensor([0.3, 0.5, 0.7, 0.4, 0.999])  # nothing reaches the last: precision 0 by convention
    head.thresholds.copy_(thresholds)
    evaluator = evaluate(task, head, logits, targets, prefix="test/", detailed=True)
    values = {key: float(value) for key, value in evaluator.compute(head).items()}

    scores, gold = logits.sigmoid().numpy(), targets.numpy()
    tuned, fixed = scores >= thresholds.numpy(), scores >= 0.5
    assert tuned[:, 4].sum() == 0
    expected = {
        "test/micro_f1": f1_score(gold, tuned, average="micro", zero_division=0),
        "test/macro_f1": f1_score(gold, tuned, average="macro", zero_division=0),
        "test/micro_f1@0.5": f1_score(gold, fixed, average="micro", zero_division=0),
        "test/macro_f1@0.5": f1_score(gold, fixed, average="macro", zero_division=0),
        "test/mAP": average_precision_score(gold, scores, average="macro"),
    }
    per_label = {"precision": precision_score, "recall": recall_score, "f1": f1_score}
    for name, metric in per_label.items():
        for index, value in enumerate(metric(gold, tuned, average=None, zero_division=0)):
            expected[f"test/{name}/label{index}"] = value
    assert values == pytest.approx(expected, abs=1e-6)
    assert values["test/micro_f1"] != pytest.approx(values["test/micro_f1@0.5"])

    report = evaluator.report()
    rows = {line[:14].strip(): line[14:].split() for line in report.text.splitlines()[2:] if line.strip()}
    assert rows["label4"] == ["0.0000", "0.0000", "0.0000", str(int(gold[:, 4].sum())), "0.9990"]
    assert float(rows["label2"][2]) == pytest.approx(expected["test/f1/label2"], abs=5e-5)
    assert float(rows["macro avg"][2]) == pytest.approx(expected["test/macro_f1"], abs=5e-5)
    assert float(rows["micro avg @0.5"][2]) == pytest.approx(expected["test/micro_f1@0.5"], abs=5e-5)
    assert float(rows["mAP"][0]) == pytest.approx(expected["test/mAP"], abs=5e-5)
    # The same numbers, unrounded, in the report's table.
    table = report.table.set_index("name")
    assert table.loc["label4", "threshold"] == pytest.approx(0.999)
    assert table.loc["label4", "support"] == int(gold[:, 4].sum())
    for name in per_label:
        for index in range(5):
            assert table.loc[f"label{index}", name] == pytest.approx(expected[f"test/{name}/label{index}"], abs=1e-6)
    assert table.loc["macro avg @0.5", "f1"] == pytest.approx(expected["test/macro_f1@0.5"], abs=1e-6)
    assert table.loc["mAP", "f1"] == pytest.approx(expected["test/mAP"], abs=1e-6)
    assert report.f1 == pytest.approx({f"label{index}": expected[f"test/f1/label{index}"] for index in range(5)})


def test_tuned_thresholds_reach_the_best_f1_of_each_label(task: MultiLabelTask) -> None:
    logits, targets = random_predictions(250, [0.1, 0.3, 0.5, 0.05, 0.2, 0.0], seed=1)
    logits = torch.logit(logits.sigmoid().mul(100).round().div(100).clamp(0.005, 0.995))  # many tied scores
    head = task.build_head(4, 6, HeadOptions(dropout=0.0, threshold=0.5, tune_thresholds=True))
    evaluator = evaluate(task, head, logits, targets, prefix="val/", detailed=False)
    evaluator.adapt_head(head)
    values = evaluator.compute(head)

    scores, gold = logits.sigmoid().numpy(), targets.numpy().astype(bool)
    thresholds = head.thresholds.numpy()
    best = []
    for label in range(5):
        candidates = [f1_score(gold[:, label], scores[:, label] >= cut) for cut in np.unique(scores[:, label])]
        best.append(max(candidates))
        assert f1_score(gold[:, label], scores[:, label] >= thresholds[label]) == pytest.approx(best[-1], abs=1e-12)
    assert thresholds[5] == pytest.approx(0.5)  # no positives in validation: the global threshold stays
    assert not np.allclose(thresholds[:5], 0.5)
    assert float(values["val/macro_f1"]) == pytest.approx(np.mean([*best, 0.0]), abs=1e-6)
    assert float(values["val/macro_f1"]) > float(values["val/macro_f1@0.5"])
    # Mean average precision leaves out the label without positives (its precision is undefined).
    expected_map = average_precision_score(gold[:, :5], scores[:, :5], average="macro")
    assert float(values["val/mAP"]) == pytest.approx(expected_map, abs=1e-6)

    fixed = task.build_head(4, 6, HeadOptions(dropout=0.0, threshold=0.5, tune_thresholds=False))
    evaluator.adapt_head(fixed)
    assert fixed.thresholds.tolist() == [0.5] * 6


def _evaluate_on_rank(rank: int, logits: torch.Tensor, targets: torch.Tensor, folder: str) -> None:
    """One of two DDP ranks (gloo, CPU): evaluate an uneven share of the examples, tune, compute, save."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        share = slice(0, 130) if rank == 0 else slice(130, None)
        task = MultiLabelTask()
        head = task.build_head(4, targets.shape[1], HeadOptions(dropout=0.0))
        evaluator = evaluate(task, head, logits[share], targets[share], prefix="val/", detailed=True)
        evaluator.adapt_head(head)
        torch.save({"thresholds": head.thresholds, "values": evaluator.compute(head)}, f"{folder}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_every_rank_tunes_and_computes_on_all_examples(task: MultiLabelTask, tmp_path: Path) -> None:
    logits, targets = random_predictions(250, [0.1, 0.3, 0.5, 0.05], seed=2)
    torch.multiprocessing.start_processes(
        _evaluate_on_rank, args=(logits, targets, str(tmp_path)), nprocs=2, start_method="fork"
    )
    head = task.build_head(4, 4, HeadOptions(dropout=0.0))
    evaluator = evaluate(task, head, logits, targets, prefix="val/", detailed=True)
    evaluator.adapt_head(head)
    expected = evaluator.compute(head)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["thresholds"], head.thresholds)
        assert result["values"].keys() == expected.keys()
        for key, value in expected.items():
            torch.testing.assert_close(result["values"][key], value, msg=key)


def test_a_tuned_threshold_never_splits_tied_scores() -> None:
    """Cutting inside the tie at 0.5 would look perfect (F1 1.0) but no threshold can do it; 0.9 alone is best."""
    scores = torch.tensor([0.9, 0.5, 0.5, 0.5, 0.5, 0.1]).unsqueeze(1)
    targets = torch.tensor([True, True, False, False, False, False]).unsqueeze(1)
    threshold = float(best_thresholds(scores, targets, default=0.5))
    assert threshold == pytest.approx(0.7)  # halfway between the lowest kept score and the next lower one


def test_a_tuned_threshold_separates_neighbouring_float_scores() -> None:
    """The midpoint of two adjacent float32 values rounds onto one of them: the threshold must still separate."""
    high = np.float32(0.7)
    scores = torch.tensor([[high], [np.nextafter(high, np.float32(0))], [np.float32(0.2)]])
    threshold = best_thresholds(scores, torch.tensor([[True], [False], [False]]), default=0.5)
    assert (scores[:, 0] >= threshold).tolist() == [True, False, False]
    lower = best_thresholds(scores, torch.tensor([[True], [True], [False]]), default=0.5)
    assert (scores[:, 0] >= lower).tolist() == [True, True, False]
    assert 0.2 < float(lower) < float(scores[1, 0])


# --- end to end: bertcls fit / test / predict on real GoEmotions rows -------------------------------------------
GOEMOTIONS_ROWS = {"train": 400, "dev": 150, "test": 150}


def goemotions_subset(folder: Path) -> dict[str, Path]:
    """The first rows of each GoEmotions split, as headerless TSV files like the originals."""
    files = {}
    for split, rows in GOEMOTIONS_ROWS.items():
        lines = (SHARED_DATA / "goemotions" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[:rows]
        files[split] = folder / f"{split}.tsv"
        files[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


def model_scores(model: BertClassifier, tokenizer, path: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reloaded model's label probabilities for a GoEmotions file, and its gold labels (multi-hot)."""
    frame = pd.read_csv(path, sep="\t", header=None, names=["text", "labels", "id"], quoting=3, dtype=str)
    batch = tokenizer(frame["text"].tolist(), truncation=True, max_length=64, padding=True, return_tensors="pt")
    with torch.no_grad():
        scores = model(dict(batch)).sigmoid()
    gold = [{int(index) for index in labels.split(",")} for labels in frame["labels"]]
    targets = torch.tensor([[index in labels for index in range(len(names))] for labels in gold])
    return scores, targets


def test_goemotions_fit_test_predict_end_to_end(
    cli, run_dir: Path, tmp_path: Path, tiny_model_dir: Path, minilm_tokenizer, shared_data, lightning_messages
) -> None:
    files = goemotions_subset(tmp_path)
    emotions_file = shared_data / "goemotions" / "emotions.txt"
    names = emotions_file.read_text(encoding="utf-8").split("\n")
    common = [
        "--config", CONFIGS / "benchmarks" / "goemotions-minilm.yaml", "--data.train_file", files["train"],
        "--data.validation_file", files["dev"], "--data.test_file", files["test"],
        "--data.label_names_file", emotions_file, "--data.max_length", "64", "--experiment", "goemotions",
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    fit = [
        "fit", *common, "--model.model_name", tiny_model_dir, "--model.learning_rate", "3e-3",
        "--data.batch_size", "16", "--trainer.max_epochs", "3", "--trainer.enable_model_summary", "false",
        "--trainer.log_every_n_steps", "5",
    ]  # fmt: skip
    assert cli(*fit) is None
    version = run_dir / "checkpoints" / "goemotions" / "version_0"
    metrics = pd.read_csv(version / "metrics.csv")
    validation = metrics.dropna(subset=["val/macro_f1"]).set_index("epoch")
    assert validation.index.tolist() == [0, 1, 2]
    for key in ("val/micro_f1", "val/micro_f1@0.5", "val/macro_f1@0.5", "val/mAP"):
        assert validation[key].between(0, 1).all(), key
    losses = metrics["train/loss"].dropna().to_numpy()
    assert losses[-3:].mean() < 0.5 * losses[:3].mean(), "the loss falls"

    # The best checkpoint holds the thresholds tuned on the validation predictions of its own epoch.
    best = next((version / "checkpoints").glob("best-*.ckpt"))
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["task"] == "multi_label"
    assert checkpoint["hyper_parameters"]["label_names"] == names
    thresholds = checkpoint["state_dict"]["head.thresholds"]
    model = BertClassifier.load_from_checkpoint(best, map_location="cpu").eval()
    scores, targets = model_scores(model, minilm_tokenizer, files["dev"], names)
    torch.testing.assert_close(thresholds, best_thresholds(scores, targets, default=0.5), atol=1e-5, rtol=0)
    assert (thresholds[~targets.any(dim=0)] == 0.5).all() and (thresholds[targets.any(dim=0)] != 0.5).all()
    tuned_f1 = float(decision_scores(scores >= thresholds, targets)["macro_f1"])
    assert validation.loc[checkpoint["epoch"], "val/macro_f1"] == pytest.approx(tuned_f1, abs=1e-6)

    # test: the report and the logged metrics use the checkpoint's thresholds.
    assert cli("test", *common, "--ckpt_path", best) is None
    (report,) = [message for message in lightning_messages if "Test classification report (multi-label" in message]
    rows = {line.split()[0]: line.split()[1:] for line in report.splitlines()[3:] if line.strip()}
    assert [float(rows[name][4]) for name in names] == pytest.approx(thresholds.tolist(), abs=5e-5)
    logged = pd.read_csv(run_dir / "checkpoints" / "goemotions" / "version_0" / "metrics.csv").iloc[-1]
    scores, targets = model_scores(model, minilm_tokenizer, files["test"], names)
    gold = targets.numpy()
    assert logged["test/macro_f1"] == pytest.approx(
        f1_score(gold, (scores >= thresholds).numpy(), average="macro", zero_division=0), abs=1e-6
    )
    assert logged["test/micro_f1@0.5"] == pytest.approx(
        f1_score(gold, (scores >= 0.5).numpy(), average="micro", zero_division=0), abs=1e-6
    )
    assert logged[f"test/f1/{names[27]}"] == pytest.approx(float(rows[names[27]][2]), abs=5e-5)

    # predict: the labels come from the checkpoint's thresholds (changed here to prove it).
    changed = torch.linspace(0.02, 0.3, len(names))
    checkpoint["state_dict"]["head.thresholds"] = changed
    torch.save(checkpoint, tmp_path / "changed.ckpt")
    output = tmp_path / "predictions.jsonl"
    predict = ["predict", *common, "--ckpt_path", tmp_path / "changed.ckpt", "--data.predict_file", files["test"]]
    assert cli(*predict, "--predictions.output_file", output, "--trainer.logger", "false") is None
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["row"] for record in records] == list(range(GOEMOTIONS_ROWS["test"]))
    written = torch.tensor([[record["probabilities"][name] for name in names] for record in records])
    torch.testing.assert_close(written, scores, atol=1e-6, rtol=0)
    expected = [[name for name, on in zip(names, row, strict=True) if on] for row in (scores >= changed).tolist()]
    assert [record["labels"] for record in records] == expected
    assert expected != [
        [name for name, on in zip(names, row, strict=True) if on] for row in (scores >= thresholds).tolist()
    ]
