"""``data.text_column`` as a list of columns joined into one text (AG News' title and description).

The joining rules and checks run without a model; one tiny model is fitted (a few steps) on a headerless
``class,title,description`` CSV made from BBC News articles (title: an article's first words, description: the
rest), to predict with the list from a file and from standard input, with the training run's separator.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import CONFIGS, SHARED_DATA, run_cli

from bertcls.data.datamodule import ClassificationDataModule
from bertcls.data.stdin import parse_lines
from bertcls.data.texts import with_texts
from bertcls.errors import DataError, InputError

COLUMNS = ["class", "title", "description"]
TEXTS = "[title, description]"
CATEGORIES = ("business", "sport", "tech")

pytestmark = [
    pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`, callbacks used to create"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]


def write_headerless(frame: pd.DataFrame, path: Path) -> Path:
    frame[COLUMNS].to_csv(path, index=False, header=False)
    return path


def datamodule(path: Path, **options: object) -> ClassificationDataModule:
    settings = {"column_names": COLUMNS, "text_column": ["title", "description"], "label_column": "class"}
    return ClassificationDataModule(train_file=str(path), **(settings | options))


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    frame = pd.DataFrame(
        {
            "class": [1, 2, 1, 2],
            "title": ["Stocks rise", None, "   ", "Team wins"],
            "description": ["Markets closed higher.", "Only a body.", None, "  "],
        }
    )
    return write_headerless(frame, tmp_path / "small.csv")


def test_an_empty_part_is_left_out_with_its_separator() -> None:
    frame = pd.DataFrame({"title": ["A", None, " ", "A"], "description": ["b", "b", None, " "], "row": range(4)})
    joined = with_texts(frame, [("title", "description")], " [SEP] ")["title + description"]
    assert joined.fillna("(none)").tolist() == ["A [SEP] b", "b", "(none)", "A"]
    assert with_texts(frame, ["title"], " ") is frame, "one column is read as it is"


def test_a_row_whose_every_part_is_empty_is_an_empty_text(small_file: Path, tiny_model_dir: Path) -> None:
    checked = datamodule(small_file).check_rows()["train"]
    (problem,) = [entry for entry in checked.invalid if entry.mask.any()]
    assert problem.describe(checked.frame) == "empty text in column 'title + description' at row 3"
    with pytest.raises(DataError, match=r"empty text in column 'title \+ description' at row 3 \(rows counted"):
        datamodule(small_file, tokenizer=str(tiny_model_dir)).build_cache("fit")


def test_a_missing_column_of_the_list_is_named(small_file: Path) -> None:
    checked = datamodule(small_file, text_column=["title", "body"]).check_rows()["train"]
    assert isinstance(checked, DataError)
    assert "column(s) 'body' not found. Available columns: class, title, description." in str(checked)


def test_a_part_that_is_not_a_string_is_named(tmp_path: Path) -> None:
    path = tmp_path / "parts.jsonl"
    pd.DataFrame({"title": [["Stocks", "rise"], "Team wins"], "description": ["b", 7], "class": [1, 2]}).to_json(
        path, orient="records", lines=True
    )
    checked = ClassificationDataModule(
        train_file=str(path), text_column=["title", "description"], label_column="class"
    ).check_rows()["train"]
    problems = [entry.describe(checked.frame) for entry in checked.invalid if entry.mask.any()]
    assert problems == [
        "a text that is not a string (a list) in column 'title' at row 1",
        "a text that is not a string (a number) in column 'description' at row 2",
    ]


def test_the_token_task_and_repeated_columns_are_refused(small_file: Path) -> None:
    with pytest.raises(InputError, match=r"data.text_column \['title', 'description'\]: the token task reads raw"):
        ClassificationDataModule(task="token", text_column=["title", "description"])
    with pytest.raises(InputError, match=r"data.text_column \['title', 'title'\] names a column more than once"):
        datamodule(small_file, text_column=["title", "title"])


def test_the_cache_key_holds_the_separator_only_where_texts_are_joined(small_file: Path, tiny_model_dir: Path) -> None:
    def key(**options: object) -> str:
        return datamodule(small_file, tokenizer=str(tiny_model_dir), **options)._split_key("train", None)

    assert key(text_separator=" ") != key(text_separator=" [SEP] ")
    assert key(text_column="title", text_separator=" ") == key(text_column="title", text_separator=" [SEP] ")
    assert key(text_column="title") == key(text_column=["title"]), "a list of one column is that column"


def test_print_config_shows_the_columns_and_the_separator(cli, capsys: pytest.CaptureFixture[str]) -> None:
    exit_ = cli("fit", "--config", CONFIGS / "quickstart.yaml", "--data.text_column", TEXTS, "--print_config")
    assert exit_ is not None and exit_.code in (0, None)
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["text_column"] == ["title", "description"] and data["text_separator"] == " "
    exit_ = cli("predict", "--data.text_column", TEXTS, "--print_config")
    assert yaml.safe_load(capsys.readouterr().out)["data"]["text_separator"] is None, "predict: the checkpoint's"


def test_standard_input_takes_a_field_per_column() -> None:
    columns = ["title", "description"]
    assert parse_lines(b"A\tb\n\tonly body\n", 2, columns) == [["A", "b"], ["", "only body"]]
    with pytest.raises(DataError, match=r"line 2 has 3 tab-separated fields, but each line needs 2, one per column"):
        parse_lines(b"A\tb\nA\tb\tc\n", 2, columns)


# --- fit and predict with a tiny model ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> SimpleNamespace:
    """A tiny model fitted a few steps on 60 articles of 3 categories, their texts joined with " [SEP] "."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data sets not found at {SHARED_DATA}")
    folder = tmp_path_factory.mktemp("text-columns")
    articles = pd.read_csv(SHARED_DATA / "bbc_news" / "train.csv")
    articles = articles[articles["category"].isin(CATEGORIES)].groupby("category").head(20).reset_index(drop=True)
    words = articles["text"].str.split()
    frame = pd.DataFrame(
        {
            "class": articles["category"].map({name: index + 1 for index, name in enumerate(CATEGORIES)}),
            "title": words.str[:6].str.join(" "),
            "description": words.str[6:40].str.join(" "),
        }
    )
    frame.loc[3, "title"] = None  # a row with one part empty keeps the other
    train = write_headerless(frame, folder / "train.csv")
    fit = (
        "fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", tiny_model_dir, "--data.train_file",
        train, "--data.where", "null", "--data.column_names", "[class, title, description]", "--data.text_column",
        TEXTS, "--data.label_column", "class", "--data.text_separator", " [SEP] ", "--data.max_length", 48,
        "--data.batch_size", 16, "--trainer.max_epochs", 1, "--trainer.log_every_n_steps", 2,
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--experiment", "texts",
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert run_cli(*fit) is None
    checkpoint = folder / "checkpoints" / "texts" / "version_0" / "checkpoints" / "last.ckpt"
    return SimpleNamespace(folder=folder, frame=frame, checkpoint=checkpoint)


def predicted(
    trained: SimpleNamespace, source: object, output: Path, *extra: object, checkpoint: Path | None = None
) -> np.ndarray:
    """``bertcls predict`` of the list's texts (from the run's checkpoint unless given one); each row's
    probabilities, in row order."""
    assert run_cli(
        "predict", "--ckpt_path", checkpoint or trained.checkpoint, "--data.predict_file", source,
        "--data.text_column", TEXTS, "--predictions.output_file", output, "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", *extra,
    ) is None  # fmt: skip
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["row"] for record in records] == list(range(len(trained.frame)))
    return np.array([list(record["probabilities"].values()) for record in records])


def test_predict_joins_the_columns_as_the_training_run_did(
    trained: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = torch.load(trained.checkpoint, weights_only=True, map_location="cpu")["datamodule_hyper_parameters"]
    assert saved["text_column"] == ["title", "description"] and saved["text_separator"] == " [SEP] "
    source = tmp_path / "new.csv"
    trained.frame[["title", "description"]].to_csv(source, index=False)  # with a header, in another order
    from_file = predicted(trained, source, tmp_path / "file.jsonl")
    lines = "".join(f"{'' if pd.isna(title) else title}\t{body}\n" for title, body in trained.frame.iloc[:, 1:].values)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines.encode())))
    np.testing.assert_allclose(predicted(trained, "-", tmp_path / "stdin.jsonl"), from_file, atol=1e-6)
    spaced = predicted(trained, source, tmp_path / "spaced.jsonl", "--data.text_separator", " ")
    assert np.abs(spaced - from_file).max() > 1e-4, "without the flag, predict joined with the training run's [SEP]"


def test_the_exported_folder_keeps_the_columns_and_the_separator(trained: SimpleNamespace, tmp_path: Path) -> None:
    exported = tmp_path / "exported"
    assert run_cli("export", trained.checkpoint, "--output", exported) is None
    section = json.loads((exported / "config.json").read_text())["bertcls"]
    assert section["text_column"] == ["title", "description"] and section["text_separator"] == " [SEP] "
    source = tmp_path / "new.csv"
    trained.frame.to_csv(source, index=False)
    from_folder = predicted(trained, source, tmp_path / "folder.jsonl", checkpoint=exported)
    np.testing.assert_allclose(from_folder, predicted(trained, source, tmp_path / "file.jsonl"), atol=1e-5)


@pytest.mark.parametrize("task", ["pair", "multi_label"])
def test_the_pair_and_multi_label_tasks_join_the_columns(task: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    frame = pd.DataFrame(
        {"q": ["why so", "how"], "q2": ["slow", None], "c": ["it rains", "by bus"], "c2": ["today", "daily"]}
    )
    frame["label"] = ["yes", "no"]
    path = tmp_path / "pairs.jsonl"
    frame.to_json(path, orient="records", lines=True)
    texts = {"text_column": ["q", "q2"], "text_pair_column": ["c", "c2"] if task == "pair" else ""}
    module = ClassificationDataModule(task=task, train_file=str(path), tokenizer=str(tiny_model_dir), **texts)
    table = module._encoded("train").table
    decoded = sorted(module.tokenizer.decode(ids) for ids in table["input_ids"])
    expected = {
        "pair": ["[CLS] how [SEP] by bus daily [SEP]", "[CLS] why so slow [SEP] it rains today [SEP]"],
        "multi_label": ["[CLS] how [SEP]", "[CLS] why so slow [SEP]"],
    }
    assert decoded == expected[task]
