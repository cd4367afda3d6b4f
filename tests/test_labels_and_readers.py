"""Label vocabularies, data errors that name file/row/column, and the CSV/TSV/JSONL/Parquet/hub readers.

The data module is used without a trainer: ``build_cache()`` then ``setup("fit")`` (or "test").
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import write_frame

from bertcls.data.datamodule import ClassificationDataModule
from bertcls.data.labels import LabelVocabulary, as_label_strings
from bertcls.data.sources import read_file
from bertcls.errors import DataError

FORMATS = [".csv", ".tsv", ".jsonl", ".parquet"]

SAMPLE = pd.DataFrame(
    {
        "text": [
            "A gripping, beautifully shot thriller.",
            'The so-called "twist" was obvious',
            "Naïve plot; great cast — 10/10 😀",
            "boring",
            "It is neither good nor bad, just there",
            "What a waste of time...",
            "I laughed, I cried",
            "meh",
        ],
        "label": ["pos", "neg", "pos", "neg", "neutral", "neg", "pos", "neutral"],
    }
)


def datamodule(tokenizer: Path, **kwargs) -> ClassificationDataModule:
    kwargs = {key: str(value) if isinstance(value, Path) else value for key, value in kwargs.items()}
    return ClassificationDataModule(tokenizer=str(tokenizer), max_length=32, batch_size=4, **kwargs)


def fit_data(tokenizer: Path, **kwargs) -> ClassificationDataModule:
    module = datamodule(tokenizer, **kwargs)
    module.build_cache()
    module.setup("fit")
    return module


def data_error_of(module: ClassificationDataModule) -> str:
    """The message of the ``DataError`` that ``build_cache`` must raise."""
    with pytest.raises(DataError) as error:
        module.build_cache()
    return str(error.value)


def examples(module: ClassificationDataModule, split: str) -> list[tuple[list[int], int, int]]:
    dataset = module.datasets[split]
    records = (dataset[index] for index in range(len(dataset)))
    return [(record["input_ids"].tolist(), record["labels"], record["rows"]) for record in records]


# --- label vocabulary -------------------------------------------------------------------------
def test_string_labels_build_a_sorted_vocabulary(tmp_path: Path, tiny_model_dir: Path) -> None:
    module = fit_data(
        tiny_model_dir,
        train_file=write_frame(SAMPLE, tmp_path / "train.csv"),
        validation_file=write_frame(SAMPLE.head(4), tmp_path / "validation.csv"),
    )
    assert module.label_names == ["neg", "neutral", "pos"]
    names = np.array(module.label_names)
    assert names[module.datasets["train"].scalars["labels"]].tolist() == SAMPLE["label"].tolist()
    assert names[module.datasets["validation"].scalars["labels"]].tolist() == SAMPLE["label"].head(4).tolist()
    assert module.label_statistics()[0].tolist() == [3, 2, 3]


def test_integer_labels_sort_numerically(tmp_path: Path, tiny_model_dir: Path) -> None:
    frame = pd.DataFrame({"text": ["one", "two", "three", "four", "five"], "label": [2, 10, 1, 10, 2]})
    module = fit_data(
        tiny_model_dir,
        train_file=write_frame(frame, tmp_path / "train.csv"),
        validation_file=write_frame(frame, tmp_path / "validation.csv"),
    )
    assert module.label_names == ["1", "2", "10"]
    assert module.datasets["train"].scalars["labels"].tolist() == [1, 2, 0, 2, 1]


@pytest.mark.parametrize(
    ("values", "names"),
    [
        (["2", "10", "1"], ("1", "2", "10")),
        (["-1", "1", "0"], ("-1", "0", "1")),
        (["b", "a", "C", "10", "9"], ("10", "9", "C", "a", "b")),
    ],
)
def test_vocabulary_order(values: list[str], names: tuple[str, ...]) -> None:
    assert LabelVocabulary.from_labels(pd.Series(values)).names == names


def test_given_label_names_fix_the_order(tmp_path: Path, tiny_model_dir: Path) -> None:
    module = fit_data(
        tiny_model_dir,
        train_file=write_frame(SAMPLE, tmp_path / "train.csv"),
        validation_file=write_frame(SAMPLE, tmp_path / "validation.csv"),
        label_names=["pos", "neg", "neutral"],
    )
    assert module.label_names == ["pos", "neg", "neutral"]
    assert module.datasets["train"].scalars["labels"].tolist()[:4] == [0, 1, 0, 1]
    with pytest.raises(DataError, match=r"repeat \[.pos.\]"):
        LabelVocabulary.from_names(["pos", "neg", "pos"])


def test_whole_number_float_labels_read_as_integers(tmp_path: Path, tiny_model_dir: Path) -> None:
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": [1.0, 0.0, 1.0]})
    module = fit_data(tiny_model_dir, train_file=write_frame(frame, tmp_path / "train.parquet"))
    assert module.label_names == ["0", "1"]


def test_whole_numbers_written_as_decimals_are_one_label_whatever_their_type() -> None:
    values = pd.Series(["0", "0.0", 1, 1.0, "2.", "-3.00", "01", "0.5", True], dtype=object)
    assert as_label_strings(values).tolist() == ["0", "0", "1", "1", "2", "-3", "01", "0.5", "True"]
    assert LabelVocabulary(("0", "1.0")).ids(pd.Series(["1", "0"])).tolist() == [1, 0]  # names saved as "1.0"


# --- data errors ----------------------------------------------------------------------------
def test_unseen_validation_label_names_file_row_and_label(tmp_path: Path, tiny_model_dir: Path) -> None:
    validation = SAMPLE[SAMPLE["label"] != "neutral"].head(4).copy()
    validation.loc[2, "label"] = "sarcastic"  # the third data row
    validation_file = write_frame(validation.reset_index(drop=True), tmp_path / "validation.csv")
    module = datamodule(
        tiny_model_dir, train_file=write_frame(SAMPLE, tmp_path / "train.csv"), validation_file=validation_file
    )
    message = data_error_of(module)
    assert str(validation_file) in message
    assert "'sarcastic'" in message
    assert re.search(r"\brow 3\b", message)
    assert "['neg', 'neutral', 'pos']" in message  # what the training data has


def test_missing_label_column_names_column_and_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    train_file = write_frame(SAMPLE.rename(columns={"label": "sentiment"}), tmp_path / "train.tsv")
    module = datamodule(tiny_model_dir, train_file=train_file)
    message = data_error_of(module)
    assert str(train_file) in message
    assert "'label'" in message
    assert "sentiment" in message  # the available columns are listed


def test_missing_text_column_names_column(tmp_path: Path, tiny_model_dir: Path) -> None:
    train_file = write_frame(SAMPLE, tmp_path / "train.jsonl")
    module = datamodule(tiny_model_dir, train_file=train_file, text_column="review")
    with pytest.raises(DataError, match=r"'review'.*not found"):
        module.build_cache()


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_missing_label_values_name_the_rows(tmp_path: Path, tiny_model_dir: Path, suffix: str) -> None:
    frame = SAMPLE.copy()
    frame.loc[[2, 5], "label"] = None  # data rows 3 and 6
    train_file = write_frame(frame, tmp_path / f"train{suffix}")
    module = datamodule(tiny_model_dir, train_file=train_file)
    message = data_error_of(module)
    assert str(train_file) in message
    assert "missing label" in message
    assert re.search(r"\brow 3, 6\b", message)


def test_missing_text_names_the_row(tmp_path: Path, tiny_model_dir: Path) -> None:
    frame = SAMPLE.copy()
    frame.loc[4, "text"] = None
    module = datamodule(tiny_model_dir, train_file=write_frame(frame, tmp_path / "train.csv"))
    with pytest.raises(DataError, match=r"empty text in column 'text' at row 5 \(rows counted"):
        module.build_cache()


def test_unreadable_files_raise_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_file(str(tmp_path / "absent.csv"))
    (tmp_path / "data.xml").write_text("x")
    with pytest.raises(DataError, match=r"suffix '\.xml'"):
        read_file(str(tmp_path / "data.xml"))
    (tmp_path / "data.xlsx").write_text("x")  # named by its suffix, with the way to CSV
    with pytest.raises(DataError, match=r"is an Excel workbook: save the sheet as CSV"):
        read_file(str(tmp_path / "data.xlsx"))
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="could not be parsed as PARQUET"):
        read_file(str(tmp_path / "broken.parquet"))


def test_missing_split_is_a_data_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    module = datamodule(tiny_model_dir, train_file=write_frame(SAMPLE, tmp_path / "train.csv"))
    with pytest.raises(DataError, match="test_file"):
        module.setup("test")


# --- readers ----------------------------------------------------------------------------------
def test_every_file_format_gives_the_same_examples(tmp_path: Path, tiny_model_dir: Path) -> None:
    encoded = {}
    for suffix in FORMATS:
        module = fit_data(
            tiny_model_dir,
            train_file=write_frame(SAMPLE, tmp_path / f"train{suffix}"),
            validation_file=write_frame(SAMPLE.tail(3), tmp_path / f"validation{suffix}"),
        )
        encoded[suffix] = (module.label_names, examples(module, "train"), examples(module, "validation"))
    baseline = encoded[".csv"]
    assert len(baseline[1]) == len(SAMPLE)
    assert [row for _, _, row in baseline[2]] == [0, 1, 2]
    for suffix in FORMATS[1:]:
        assert encoded[suffix] == baseline, suffix


def test_text_survives_every_reader_unchanged(tmp_path: Path) -> None:
    for suffix in FORMATS:
        frame = read_file(str(write_frame(SAMPLE, tmp_path / f"data{suffix}")))
        assert frame["text"].tolist() == SAMPLE["text"].tolist(), suffix


def test_where_filter_keeps_original_row_numbers(tmp_path: Path, tiny_model_dir: Path) -> None:
    frame = SAMPLE.assign(source=["a", "b"] * 4)
    module = fit_data(
        tiny_model_dir,
        train_file=write_frame(frame, tmp_path / "train.csv"),
        validation_file=write_frame(frame, tmp_path / "validation.csv"),
        where={"source": "b"},
    )
    assert [row for _, _, row in examples(module, "validation")] == [1, 3, 5, 7]
    with pytest.raises(DataError, match="no rows left"):
        fit_data(tiny_model_dir, train_file=str(tmp_path / "train.csv"), where={"source": "c"})


def test_validation_is_held_out_of_train_reproducibly(tmp_path: Path, tiny_model_dir: Path) -> None:
    frame = pd.concat([SAMPLE] * 25, ignore_index=True)  # 200 rows
    train_file = write_frame(frame, tmp_path / "train.csv")
    first = fit_data(tiny_model_dir, train_file=train_file, validation_fraction=0.1)
    train_rows = sorted(first.datasets["train"].rows.tolist())
    validation_rows = sorted(first.datasets["validation"].rows.tolist())
    assert len(validation_rows) == 20
    assert sorted(train_rows + validation_rows) == list(range(200))
    again = fit_data(tiny_model_dir, train_file=train_file, validation_fraction=0.1)
    assert sorted(again.datasets["validation"].rows.tolist()) == validation_rows
    other = fit_data(tiny_model_dir, train_file=train_file, validation_fraction=0.1, split_seed=7)
    assert sorted(other.datasets["validation"].rows.tolist()) != validation_rows


def test_sst2_dev_tsv_reads_completely(shared_data: Path, minilm_dir: Path) -> None:
    dev = shared_data / "glue" / "SST-2" / "dev.tsv"
    module = fit_data(minilm_dir, train_file=dev, validation_file=dev, text_column="sentence")
    assert len(module.datasets["validation"]) == 872
    assert module.label_names == ["0", "1"]


# With CSV quoting rules a TSV field that starts with a double quote would swallow tabs and line ends up to
# the next quote: GLUE-style TSVs (MRPC, any text opening with a quotation) would fail or merge rows.
def test_tsv_quotes_are_plain_characters(tmp_path: Path) -> None:
    texts = ['"Great" is an understatement', 'he said "wow', "a plain review", '"unbalanced quote at start']
    path = write_frame(pd.DataFrame({"text": texts, "label": [1, 0, 1, 0]}), tmp_path / "data.tsv")
    frame = read_file(str(path))
    assert frame["text"].tolist() == texts


def test_glue_mrpc_tsv_reads_every_row(shared_data: Path) -> None:
    path = shared_data / "glue" / "MRPC" / "dev.tsv"
    expected = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE)
    frame = read_file(str(path))
    assert len(frame) == len(expected) == 408
    assert frame["#1 String"].tolist() == expected["#1 String"].tolist()


# pandas.read_json infers dtypes by default: JSON strings "01", "02", "10" would become numbers 1, 2, 10.
def test_jsonl_string_labels_keep_their_spelling(tmp_path: Path, tiny_model_dir: Path) -> None:
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": ["01", "02", "10"]})
    names = {}
    for suffix in (".jsonl", ".parquet"):
        module = fit_data(tiny_model_dir, train_file=write_frame(frame, tmp_path / f"train{suffix}"))
        names[suffix] = module.label_names
    assert names[".parquet"] == ["01", "02", "10"]
    assert names[".jsonl"] == names[".parquet"]


# --- Hugging Face datasets path (a local dataset folder; no network) ---------------------------
@pytest.fixture
def hub_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "my_dataset"
    write_frame(pd.concat([SAMPLE] * 5, ignore_index=True), folder / "train.csv")
    write_frame(SAMPLE.head(6), folder / "test.csv")
    return folder


def test_local_hub_dataset_folder_loads_train_and_test(hub_folder: Path, tiny_model_dir: Path) -> None:
    module = datamodule(tiny_model_dir, hub_dataset=hub_folder, hub_splits={"train": "train", "test": "test"})
    module.build_cache()
    module.setup("fit")
    module.setup("test")
    assert module.label_names == ["neg", "neutral", "pos"]
    assert len(module.datasets["train"]) + len(module.datasets["validation"]) == 40
    assert len(module.datasets["validation"]) == 4
    assert len(module.datasets["test"]) == 6
    # The same data from plain files gives exactly the same examples (same held-out validation split).
    files = datamodule(tiny_model_dir, train_file=hub_folder / "train.csv", test_file=hub_folder / "test.csv")
    files.build_cache()
    files.setup("fit")
    files.setup("test")
    for split in ("train", "validation", "test"):
        assert examples(module, split) == examples(files, split), split


def test_unknown_hub_split_is_a_data_error(hub_folder: Path, tiny_model_dir: Path) -> None:
    module = datamodule(tiny_model_dir, hub_dataset=hub_folder, hub_splits={"train": "train", "validation": "dev"})
    with pytest.raises(DataError, match="dev"):
        module.build_cache()


def test_csv_with_a_byte_order_mark_keeps_its_first_column_name(tmp_path: Path) -> None:
    path = tmp_path / "excel-export.csv"
    path.write_bytes("\ufefftext,label\ngood film,pos\n".encode())  # as spreadsheet programs save CSV
    frame = read_file(str(path))
    assert frame.columns.tolist() == ["text", "label"]


def test_jsonl_error_names_the_broken_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "fine", "label": 1}\n\n{"text": "broken", "label": 0\n{"text": "x", "label": 1}\n')
    with pytest.raises(DataError, match=r"train\.jsonl: line 3 is not valid JSON") as error:
        read_file(str(path))
    assert str(error.value).startswith(f"{path}: line 3"), "the file is named once, not wrapped in another message"


def test_missing_file_is_reported_before_any_tokenizing(tmp_path: Path, tiny_model_dir: Path) -> None:
    module = datamodule(tiny_model_dir, train_file=tmp_path / "typo.csv")
    with pytest.raises(DataError, match=r"typo\.csv: file not found"):
        module.build_cache()


def test_hub_class_label_ids_become_their_names() -> None:
    """Hub datasets store labels as ids with names in the features (imdb, conll2003's ner_tags, GLUE's -1)."""
    import datasets

    from bertcls.data.sources import hub_frame

    tags = datasets.ClassLabel(names=["O", "B-PER", "I-PER"])
    features = datasets.Features({"label": datasets.ClassLabel(names=["neg", "pos"]), "ner_tags": datasets.List(tags)})
    table = datasets.Dataset.from_dict({"label": [1, 0, -1], "ner_tags": [[1, 2, 0], [0], []]}, features=features)
    frame = hub_frame(table)
    assert frame["label"].tolist()[:2] == ["pos", "neg"] and pd.isna(frame["label"][2])
    assert frame["ner_tags"].tolist() == [["B-PER", "I-PER", "O"], ["O"], []]


def test_headerless_file_with_label_indices_and_a_names_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    """GoEmotions-style: no header row, labels are positions in a names file (here single-label)."""
    lines = [f"text {index} about things\t{index % 3}\tid{index}" for index in range(30)]
    train = tmp_path / "train.tsv"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    names = tmp_path / "names.txt"
    names.write_text("anger\njoy\nsurprise", encoding="utf-8")
    module = fit_data(
        tiny_model_dir,
        train_file=train,
        column_names=["text", "label", "id"],
        labels_are_indices=True,
        label_names_file=str(names),
    )
    assert module.label_names == ["anger", "joy", "surprise"]
    dataset = module.datasets["train"]
    for index in range(len(dataset)):
        example = dataset[index]
        assert example["labels"] == example["rows"] % 3
    lines[7] = "text 7\t3\tid7"  # no fourth name
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = data_error_of(
        datamodule(
            tiny_model_dir,
            train_file=train,
            column_names=["text", "label", "id"],
            labels_are_indices=True,
            label_names_file=str(names),
        )
    )
    assert "row 8" in message and "['3']" in message and "0 to 2" in message


def test_file_format_overrides_the_suffix(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = write_frame(SAMPLE, tmp_path / "train.tsv").rename(tmp_path / "train.data")
    module = fit_data(tiny_model_dir, train_file=path, file_format="tsv")
    assert sorted(module.label_names) == sorted(SAMPLE["label"].unique())
    unknown = datamodule(tiny_model_dir, train_file=path)
    assert "cannot tell the file format" in data_error_of(unknown)
