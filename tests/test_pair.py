"""The sentence-pair task (``task: pair``): encoding, GLUE readers, unlabelled rows, metrics, fit/test/predict."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CONFIGS, CUES, run_cli, write_frame
from sklearn.metrics import accuracy_score, f1_score

from bertcls.data.datamodule import ClassificationDataModule
from bertcls.data.sources import ROW_COLUMN
from bertcls.errors import DataError
from bertcls.tasks import DataSpec, get_task

pytestmark = pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")


def glue(shared_data: Path, task: str, tokenizer: Path, **kwargs) -> ClassificationDataModule:
    """A data module over a GLUE task's train and dev files, columns as in configs/data/<task>.yaml."""
    columns = {
        "RTE": {"text_column": "sentence1", "text_pair_column": "sentence2", "label_column": "label"},
        "MRPC": {"text_column": "#1 String", "text_pair_column": "#2 String", "label_column": "Quality"},
    }[task]
    folder = shared_data / "glue" / task
    return ClassificationDataModule(
        task="pair",
        train_file=str(folder / "train.tsv"),
        validation_file=str(folder / "dev.tsv"),
        tokenizer=str(tokenizer),
        **columns,
        **kwargs,
    )


def test_rte_pairs_are_encoded_as_cls_a_sep_b_sep_with_segment_ids(shared_data, tiny_model_dir, minilm_tokenizer):
    module = glue(shared_data, "RTE", tiny_model_dir, max_length=128)
    module.build_cache()
    module.setup("fit")
    dev = pd.read_csv(shared_data / "glue" / "RTE" / "dev.tsv", sep="\t", quoting=3)
    dataset = module.datasets["validation"]
    assert len(dataset) == 277
    assert module.label_names == ["entailment", "not_entailment"]
    cls, sep = minilm_tokenizer.cls_token_id, minilm_tokenizer.sep_token_id
    for index in (0, 100, 276):
        example = dataset[index]
        row = dev.iloc[example["rows"]]
        expected = minilm_tokenizer(row["sentence1"], row["sentence2"], truncation="longest_first", max_length=128)
        ids, segments = example["input_ids"].tolist(), example["token_type_ids"].tolist()
        assert ids == expected["input_ids"]
        assert segments == expected["token_type_ids"]
        first_sep = ids.index(sep)
        assert ids[0] == cls and ids[-1] == sep and ids.count(sep) == 2
        assert set(segments[: first_sep + 1]) == {0} and set(segments[first_sep + 1 :]) == {1}
        assert module.label_names[example["labels"]] == row["label"]
    # The bucketed sampler sorts by the pair's total length.
    assert dataset.lengths.tolist() == [len(dataset[index]["input_ids"]) for index in range(len(dataset))]


def test_truncation_trims_the_longer_text_first(minilm_tokenizer) -> None:
    long_text = " ".join(["word"] * 60)
    frame = pd.DataFrame({"a": [long_text], "b": ["a short hypothesis"], "label": ["x"], ROW_COLUMN: [0]})
    spec = DataSpec(text_column="a", text_pair_column="b", max_length=20)
    task = get_task("pair")
    vocabulary = None
    encoded = task.encode(frame, minilm_tokenizer, spec, vocabulary, "pairs.csv")
    ids = encoded.table[0]["input_ids"]
    assert len(ids) == 20
    assert encoded.num_truncated == 1
    hypothesis = minilm_tokenizer("a short hypothesis", add_special_tokens=False)["input_ids"]
    assert ids[-len(hypothesis) - 1 : -1] == hypothesis, "the short side is kept whole"


def test_mrpc_columns_with_spaces_and_bom_read_completely(shared_data, tiny_model_dir) -> None:
    module = glue(shared_data, "MRPC", tiny_model_dir)
    module.build_cache()
    module.setup("fit")
    assert module.label_names == ["0", "1"]
    assert len(module.datasets["train"]) == 3668 and len(module.datasets["validation"]) == 408
    counts, total = module.label_statistics()
    assert counts.tolist() == [1194, 2474] and total == 3668


def snli_frame() -> pd.DataFrame:
    """SNLI's own layout: gold_label, sentence1, sentence2 (and more); "-" where annotators did not agree."""
    return pd.DataFrame(
        {
            "gold_label": ["neutral", "-", "contradiction", "entailment", "-", "neutral"],
            "sentence1": [f"A person is outdoors number {index}." for index in range(6)],
            "sentence2": [f"Someone is inside {index}." for index in range(6)],
            "pairID": [f"id{index}" for index in range(6)],
        }
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".txt"])
def test_rows_without_gold_label_are_dropped_and_counted(tmp_path, tiny_model_dir, suffix, lightning_messages):
    path = write_frame(snli_frame(), tmp_path / f"snli_1.0_dev{suffix.replace('.txt', '.tsv')}")
    if suffix == ".txt":  # SNLI ships .txt files that are tab-separated
        path = path.rename(path.with_suffix(".txt"))
    module = ClassificationDataModule(
        task="pair",
        train_file=str(path),
        validation_file=str(path),
        text_column="sentence1",
        text_pair_column="sentence2",
        label_column="gold_label",
        tokenizer=str(tiny_model_dir),
    )
    module.build_cache()
    module.setup("fit")
    assert module.label_names == ["contradiction", "entailment", "neutral"]
    assert sorted(module.datasets["train"].rows.tolist()) == [0, 2, 3, 5]
    assert any("dropped 2 of 6 rows without a gold label" in message for message in lightning_messages)


def test_pair_task_without_second_column_says_what_to_set(tmp_path, tiny_model_dir) -> None:
    path = write_frame(snli_frame(), tmp_path / "train.csv")
    module = ClassificationDataModule(
        task="pair",
        train_file=str(path),
        text_column="sentence1",
        label_column="gold_label",
        tokenizer=str(tiny_model_dir),
    )
    with pytest.raises(DataError, match="text_pair_column"):
        module.build_cache()


def test_metrics_match_scikit_learn_on_fixed_predictions() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(301, 2, generator=generator)
    labels = torch.randint(0, 2, (301,), generator=generator)
    evaluator = get_task("pair").evaluator(["0", "1"], prefix="test/", detailed=True)
    for start in range(0, 301, 64):  # several batches
        evaluator.update(logits[start : start + 64], {"labels": labels[start : start + 64]}, head=None)
    values = {name: float(value) for name, value in evaluator.compute(head=None).items()}
    predicted = logits.argmax(-1).numpy()
    truth = labels.numpy()
    assert values["test/accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert values["test/macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert values["test/f1_positive"] == pytest.approx(f1_score(truth, predicted, pos_label=1))
    assert values["test/f1/0"] == pytest.approx(f1_score(truth, predicted, pos_label=0))


def cue_pairs(words: list[str], rows: int, seed: int) -> pd.DataFrame:
    """Premise: random real words; hypothesis: random words plus two cue words of the label."""
    rng = random.Random(seed)
    records = []
    for index in range(rows):
        label = ("pos", "neg")[index % 2]
        hypothesis = rng.sample(words, 4) + rng.sample(CUES[label], 2)
        rng.shuffle(hypothesis)
        records.append({"premise": " ".join(rng.sample(words, 8)), "hypothesis": " ".join(hypothesis), "label": label})
    return pd.DataFrame(records)


def test_pair_fit_test_predict_end_to_end(tmp_path, run_dir, tiny_model_dir, real_words) -> None:
    train = write_frame(cue_pairs(real_words, 320, seed=1), tmp_path / "train.jsonl")
    dev = write_frame(cue_pairs(real_words, 96, seed=2), tmp_path / "dev.jsonl")
    common = [
        "--data.task", "pair", "--data.text_column", "premise", "--data.text_pair_column", "hypothesis",
        "--data.where", "null", "--data.max_length", "32", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    fit = [
        "fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", tiny_model_dir,
        "--model.learning_rate", "3e-3", "--data.train_file", train, "--data.validation_file", dev,
        "--data.batch_size", "16", "--trainer.max_epochs", "4", "--trainer.enable_model_summary", "false",
        "--experiment", "pairs", *common,
    ]  # fmt: skip
    assert run_cli(*fit) is None
    version = run_dir / "checkpoints" / "pairs" / "version_0"
    metrics = pd.read_csv(version / "metrics.csv")
    losses = metrics["train/loss"].dropna().to_numpy()
    assert losses[-3:].mean() < 0.5 * losses[:3].mean(), "the loss falls"
    assert metrics["val/accuracy"].dropna().iloc[-1] >= 0.9
    best = next((version / "checkpoints").glob("best-*.ckpt"))
    assert torch.load(best, map_location="cpu", weights_only=True)["hyper_parameters"]["task"] == "pair"

    # test and predict from the checkpoint alone: the task comes from it, not from the command line.
    assert run_cli("test", "--ckpt_path", best, "--data.test_file", dev, *common[2:], "--experiment", "pairs") is None
    output = tmp_path / "predictions.jsonl"
    assert (
        run_cli(
            "predict", "--ckpt_path", best, "--data.predict_file", dev, "--predictions.output_file", output,
            *common[2:], "--experiment", "pairs",
        )
        is None
    )  # fmt: skip
    records = [json.loads(line) for line in output.read_text().splitlines()]
    truth = pd.read_json(dev, lines=True)["label"].tolist()
    assert [record["row"] for record in records] == list(range(96))
    predicted = [record["label"] for record in records]
    assert np.mean([p == t for p, t in zip(predicted, truth, strict=True)]) >= 0.9
