"""Up-front data checks: the malformed-input corpus in tests/malformed/, ``bertcls validate-data``, ``skip_invalid``.

Each file of the corpus holds one kind of mistake users make. ``bertcls validate-data`` must name the file, the
row or line and the fix for each, and ``fit`` must stop on them before training, or, with
``data.skip_invalid``, drop exactly those rows and log how many.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import CONFIGS, run_cli, separable_frame, write_frame

from bertcls.data.conll import read_conll
from bertcls.data.datamodule import ClassificationDataModule
from bertcls.data.sources import ROW_COLUMN, ReadOptions, SplitSource, read_source
from bertcls.tasks.token.tag_scheme import broken_entities, unprefixed_tags

CORPUS = Path(__file__).parent / "malformed"
TRAIN = CORPUS / "train.csv"

CASES = {
    "empty text": (["--data.train_file", CORPUS / "empty_text.csv"], ["empty text in column 'text' at row 2, 3"]),
    "missing label": (
        ["--data.train_file", CORPUS / "missing_label.csv"], ["missing label in column 'label' at row 2"]
    ),
    "label absent from training": (
        ["--data.train_file", TRAIN, "--data.validation_file", CORPUS / "unknown_label.csv"],
        ["unknown_label.csv: 3 rows, 1 invalid", "unknown label(s) ['sarcastic'] in column 'label' at row 2",
         "one of the training data's labels ['neg', 'pos']"],
    ),
    "mixed label types": (
        ["--data.train_file", CORPUS / "mixed_label_types.jsonl"],
        ["label(s) ['1'] of another kind than the rest in column 'label'", "at row 3"],
    ),
    "not UTF-8": (["--data.train_file", CORPUS / "not_utf8.csv"], ["not valid UTF-8: line 3 (byte offset 29)"]),
    "unclosed quote": (
        ["--data.train_file", CORPUS / "unclosed_quote.csv"], ["line 3 opens a quoted field (\") that is never closed"]
    ),
    "extra field": (
        ["--data.train_file", CORPUS / "extra_field.csv"],
        ["line 3 has 3 fields where 2 are expected", "in double quotes", "data.skip_invalid"],
    ),
    "TSV line with a tab in its text": (
        ["--data.train_file", CORPUS / "extra_tab.tsv"],
        ["line 3 has 3 fields where 2 are expected", "A text holds a tab (TSV fields cannot)"],
    ),
    "wrong columns": (
        ["--data.train_file", CORPUS / "wrong_columns.csv"],
        ["column(s) 'text', 'label' not found. Available columns: review, sentiment"],
    ),
    "header only": (["--data.train_file", CORPUS / "header_only.csv"], ["header_only.csv: holds no rows"]),
    "broken JSON line": (["--data.train_file", CORPUS / "broken_line.jsonl"], ["line 2 is not valid JSON"]),
    "pair with one side missing": (
        ["--data.task", "pair", "--data.train_file", CORPUS / "pair_missing_side.tsv", "--data.text_column",
         "sentence1", "--data.text_pair_column", "sentence2"],
        ["empty text in column 'sentence2' at row 2"],
    ),
    "I- tag opening an entity": (
        ["--data.task", "token", "--data.train_file", CORPUS / "broken_entity.conll"],
        ["an I-/E- tag that continues no entity", "at row 3 (line 8)", "start each entity with B-TYPE"],
    ),
    "unprefixed tag": (
        ["--data.task", "token", "--data.train_file", CORPUS / "unprefixed_tag.conll"],
        ["a tag without a B-/I-/E-/S- prefix among prefixed ones in column 'tags' at row 2 (line 4)"],
    ),
    "CoNLL line with too few fields": (
        ["--data.task", "token", "--data.train_file", CORPUS / "conll_fields.conll"],
        ["line 5 has 2 columns but line 1 has 3"],
    ),
    "token and tag lists": (
        ["--data.task", "token", "--data.train_file", CORPUS / "token_lists.jsonl"],
        ["a value that is not a list of strings in column 'tokens' at row 3",
         "a different number of tokens ('tokens') and tags ('tags') at row 2"],
    ),
    "multi-label id out of range": (
        ["--data.task", "multi_label", "--data.train_file", CORPUS / "label_ids.tsv", "--data.label_column", "labels",
         "--data.labels_are_indices", "true", "--data.label_names_file", CORPUS / "three_labels.txt"],
        ["unknown label(s) ['7'] in column 'labels' at row 3", "whole numbers from 0 to 2"],
    ),
    "multi-label 0/1 column": (
        ["--data.task", "multi_label", "--data.train_file", CORPUS / "binary_columns.csv", "--data.label_columns",
         "[joy, anger]"],
        ["['yes'] in column 'anger' (of data.label_columns) at row 2", "use 0/1 or true/false"],
    ),
    "repeated prediction ids": (
        ["--data.train_file", TRAIN, "--data.predict_file", CORPUS / "duplicate_ids.csv", "--data.id_column",
         "doc_id"],
        ["repeated ids ['a'] in data.id_column 'doc_id' at row 1, 3"],
    ),
    "JSON object or list as a label": (
        ["--data.train_file", CORPUS / "structured_label.jsonl"],
        ["a label that is a list or an object, not one value, in column 'label' at row 2, 3", "data.task: multi_label"],
    ),
    "unquoted separator in the first row": (
        ["--data.train_file", CORPUS / "unquoted_separator.csv"],
        ["unquoted_separator.csv: line 2 has more fields than the header", "must be quoted"],
    ),
    "repeated column name": (
        ["--data.train_file", CORPUS / "repeated_column.csv"],
        ["the header (line 1) names more than one column 'text' (columns 1, 3)"],
    ),
    "multi-label delimiter that never occurs": (
        ["--data.task", "multi_label", "--data.train_file", CORPUS / "label_delimiter.tsv", "--data.label_column",
         "labels"],
        ["labels joined by ';', while data.label_delimiter ',' occurs in no row", "at row 1",
         "set data.label_delimiter: ';'"],
    ),
    "text of invisible characters": (
        ["--data.train_file", CORPUS / "invisible_text.csv"],
        ["a text of only invisible characters (control, zero-width or NUL) in column 'text' at row 2, 3"],
    ),
    "texts that are not strings (JSON)": (
        ["--data.train_file", CORPUS / "non_string_text.jsonl"],
        ["a text that is not a string (a list, a number) in column 'text' at row 1, 3", "data.task: token"],
    ),
    "texts that are not strings (Parquet)": (
        ["--data.train_file", CORPUS / "numbers_as_text.parquet"],
        ["a text that is not a string (a number) in column 'text' at row 1, 2, 3"],
    ),
    "empty JSON Lines file": (
        ["--data.train_file", CORPUS / "empty.jsonl"], ["empty.jsonl: holds no rows (the file is empty)"]
    ),
    "gzip-compressed file": (
        ["--data.train_file", CORPUS / "gzipped.csv"], ["is gzip-compressed (it starts with the bytes 1f 8b)", "gunzip"]
    ),
    "Excel workbook (a ZIP archive)": (
        ["--data.train_file", CORPUS / "workbook.csv"], ["is a ZIP archive", "Excel workbook", "CSV UTF-8"]
    ),
    "UTF-16 file": (
        ["--data.train_file", CORPUS / "utf16.csv"],
        ["is UTF-16 text (it starts with the byte-order mark ff fe), not UTF-8", "iconv -f utf-16 -t utf-8"],
    ),
    "semicolon-separated CSV": (
        ["--data.train_file", CORPUS / "semicolons.csv"],
        ["Available columns: text;label", "looks ';'-separated", "data.csv_delimiter: ';'"],
    ),
    "training data of one class": (
        ["--data.train_file", CORPUS / "one_class.csv"],
        ["only one label, 'pos', occurs in the training data (column 'label')", "at least two labels"],
    ),
    "multi-label training data of one label": (
        ["--data.task", "multi_label", "--data.train_file", CORPUS / "one_class.csv"],
        ["only one label, 'pos', occurs", "use data.task single_label with two labels"],
    ),
}  # fmt: skip
# Awkward input that a run must accept, and what validate-data then says.
ACCEPTED = {
    "JSON Lines with a byte-order mark": (
        ["--data.train_file", CORPUS / "byte_order_mark.jsonl"], ["2 rows, ok", "labels: neg, pos"]
    ),
    "whole numbers written as decimals": (
        ["--data.train_file", CORPUS / "decimal_labels.csv"], ["4 rows, ok", "labels: 0, 1\n"]
    ),
    "semicolon-separated CSV with data.csv_delimiter": (
        ["--data.train_file", CORPUS / "semicolons.csv", "--data.csv_delimiter", ";"],
        ["2 rows, ok", "labels: neg, pos"],
    ),
    "labels spelt in another case, warned about": (
        ["--data.train_file", CORPUS / "label_spellings.csv"],
        ["note: ", "warning: labels in column 'label' that differ from a more frequent one only in case or "
         "surrounding spaces ('Pos' beside 'pos', 'neg ' beside 'neg'; 2 of 6)", "data.normalize_labels: true",
         "labels: Pos, neg, neg , pos"],
    ),
    "labels spelt in another case, normalized": (
        ["--data.train_file", CORPUS / "label_spellings.csv", "--data.normalize_labels", "true"],
        ["read 2 labels in another spelling (data.normalize_labels): 'Pos' as 'pos', 'neg ' as 'neg'",
         "labels: neg, pos\n"],
    ),
    "labels that look like free text (columns swapped), warned about": (
        ["--data.train_file", CORPUS / "free_text_labels.csv"],
        ["warning: the labels in column 'label' look like free text (4 of 4 have 4 or more words, e.g. 'a great "
         "film with a lovely cast')", "Is data.label_column a text column?"],
    ),
    "labels that almost all occur once (an id column), warned about": (
        ["--data.train_file", CORPUS / "id_labels.csv"],
        ["warning: 12 of the 12 labels in column 'label' occur in one row only", "Check data.label_column"],
    ),
    "validation file that is the training file, warned about": (
        ["--data.train_file", TRAIN, "--data.validation_file", TRAIN],
        ["warning: the validation data is the same as the training data", "4 of its 4 examples (100%)"],
    ),
}  # fmt: skip


def validate_data(capsys: pytest.CaptureFixture, model_dir: Path, *args: object) -> tuple[int, str]:
    """Run ``bertcls validate-data`` in-process on the quickstart config; return its exit status and output."""
    capsys.readouterr()
    exit_ = run_cli("validate-data", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", model_dir,
                    "--data.validation_file", "null", "--data.where", "null", *args)  # fmt: skip
    output = capsys.readouterr().out
    code = exit_.code if exit_ is not None else 0
    return (code, output) if isinstance(code, int) else (2, output + code)


@pytest.mark.parametrize(("args", "expected"), CASES.values(), ids=CASES.keys())
def test_validate_data_names_the_file_the_rows_and_the_fix(
    capsys: pytest.CaptureFixture, tiny_model_dir: Path, args: list, expected: list[str]
) -> None:
    code, output = validate_data(capsys, tiny_model_dir, *args)
    assert code != 0, output
    checked = [value for value in args if isinstance(value, Path) and value != TRAIN and value.suffix != ".txt"]
    assert str(checked[0]) in output
    for part in expected:
        assert part in output


@pytest.mark.parametrize(("args", "expected"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_validate_data_accepts_awkward_input_and_says_what_it_read(
    capsys: pytest.CaptureFixture, tiny_model_dir: Path, args: list, expected: list[str]
) -> None:
    code, output = validate_data(capsys, tiny_model_dir, *args)
    assert code == 0, output
    for part in expected:
        assert part in output


def test_validate_data_passes_clean_data_and_lists_the_labels(
    capsys: pytest.CaptureFixture, tiny_model_dir: Path, shared_data: Path
) -> None:
    glue = shared_data / "glue" / "MRPC"
    code, output = validate_data(
        capsys, tiny_model_dir, "--data.task", "pair", "--data.train_file", glue / "train.tsv",
        "--data.validation_file", glue / "dev.tsv", "--data.text_column", "#1 String", "--data.text_pair_column",
        "#2 String", "--data.label_column", "Quality",
    )  # fmt: skip
    assert code == 0, output
    assert "train: " in output and "validation: " in output and ", ok" in output
    assert "labels: 0, 1" in output
    assert "The data is ready." in output


def test_validate_data_reports_every_split_and_every_problem(capsys: pytest.CaptureFixture, tiny_model_dir: Path):
    code, output = validate_data(
        capsys, tiny_model_dir, "--data.train_file", CORPUS / "empty_text.csv", "--data.validation_file",
        CORPUS / "unknown_label.csv", "--data.test_file", CORPUS / "unclosed_quote.csv",
    )  # fmt: skip
    assert code == 1
    assert "3 of 3 splits would stop a run" in output
    for part in ("empty text in column 'text'", "unknown label(s) ['sarcastic']", "never closed"):
        assert part in output


def test_skip_invalid_is_reported_and_still_fails_an_unreadable_split(
    capsys: pytest.CaptureFixture, tiny_model_dir: Path
) -> None:
    code, output = validate_data(
        capsys, tiny_model_dir, "--skip-invalid", "--data.train_file", CORPUS / "extra_field.csv"
    )
    assert code == 0, output
    assert "skipped 1 lines with the wrong number of fields" in output and "line 3" in output
    code, output = validate_data(
        capsys, tiny_model_dir, "--skip-invalid", "--data.train_file", CORPUS / "empty_text.csv"
    )
    assert code == 0 and "2 invalid" in output and ", skipped" in output
    code, output = validate_data(
        capsys, tiny_model_dir, "--skip-invalid", "--data.train_file", CORPUS / "unclosed_quote.csv"
    )
    assert code == 1


def test_several_problems_in_one_split_are_one_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    frame = pd.DataFrame({"text": ["good", " ", "bad", "fine", None], "label": ["pos", "neg", None, "pos", "neg"]})
    exit_ = run_cli("fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", tiny_model_dir,
                    "--data.train_file", write_frame(frame, tmp_path / "train.csv"), "--data.where", "null",
                    "--data.validation_file", "null")  # fmt: skip
    message = str(exit_.code)
    assert message.startswith(f"bertcls: data error: {tmp_path / 'train.csv'}: 2 kinds of invalid rows")
    assert "- empty text in column 'text' at row 2, 5: fill in the text" in message
    assert "- missing label in column 'label' at row 3: fill in the labels." in message
    assert "data.skip_invalid: true" in message


def fit_args(tiny_model_dir: Path, train: Path, *extra: object) -> list[object]:
    return [
        "fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", tiny_model_dir,
        "--data.train_file", train, "--data.validation_file", "null", "--data.where", "null",
        "--data.max_length", "16", "--data.batch_size", "16", "--trainer.max_steps", "2",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false", "--experiment", "skip", *extra,
    ]  # fmt: skip


def test_fit_skips_invalid_rows_and_logs_the_count(
    run_dir: Path, tiny_model_dir: Path, real_words: list[str], lightning_messages: list[str]
) -> None:
    frame = separable_frame(real_words, 200, seed=1)
    frame.loc[[3, 50], "text"] = "   "
    frame.loc[7, "label"] = None
    frame.loc[9, "label"] = "7"  # a number among names
    train = write_frame(frame, run_dir / "train.csv")
    assert run_cli(*fit_args(tiny_model_dir, train, "--data.skip_invalid", "true")) is None
    notes = [message for message in lightning_messages if "skipped 4 of 200 rows as invalid" in message]
    assert notes, lightning_messages
    assert "at row 4, 51" in notes[0] and "at row 8" in notes[0] and "['7']" in notes[0]
    metrics = pd.read_csv(next(run_dir.glob("checkpoints/skip/*/metrics.csv")))
    assert metrics["data/train_skipped_invalid"].dropna().tolist() == [4]


def test_fit_reads_label_spellings_as_one_label_when_asked(
    run_dir: Path, tiny_model_dir: Path, real_words: list[str], lightning_messages: list[str]
) -> None:
    frame = separable_frame(real_words, 200, seed=2)
    frame.loc[[1, 2], "label"] = frame.loc[[1, 2], "label"].str.upper()
    frame.loc[5, "label"] += " "
    train = write_frame(frame, run_dir / "train.csv")
    assert run_cli(*fit_args(tiny_model_dir, train, "--data.normalize_labels", "true")) is None
    assert any("labels in another spelling (data.normalize_labels)" in message for message in lightning_messages)
    last = next(run_dir.glob("checkpoints/skip/*/checkpoints/last.ckpt"))
    assert torch.load(last, map_location="cpu", weights_only=True)["hyper_parameters"]["label_names"] == ["neg", "pos"]


def test_fit_checks_the_test_file_before_training(run_dir: Path, tiny_model_dir: Path, real_words: list[str]):
    train = write_frame(separable_frame(real_words, 64, seed=1), run_dir / "train.csv")
    exit_ = run_cli(*fit_args(tiny_model_dir, train, "--data.test_file", CORPUS / "missing_label.csv"))
    assert "missing_label.csv: missing label in column 'label' at row 2" in str(exit_.code)
    assert not list(run_dir.glob("checkpoints/**/*.ckpt")), "training started"


# --- readers and tag schemes ------------------------------------------------------------------------------
def test_skipping_bad_lines_drops_only_them(tmp_path: Path) -> None:
    path = tmp_path / "lines.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([["text", "label"], ["a", "pos"], ["b", "neg"], ["c", "pos"]])
        handle.write("d,neg,extra\ne,pos\n")
    frame = read_source(SplitSource(str(path)), ReadOptions(skip_bad_lines=True))
    assert frame["text"].tolist() == ["a", "b", "c", "e"]
    assert frame[ROW_COLUMN].tolist() == [0, 1, 2, 4], "rows after a skipped line keep their numbers"
    assert frame.attrs["skipped_lines"] == [5]
    conll = read_source(SplitSource(str(CORPUS / "conll_fields.conll")), ReadOptions(skip_bad_lines=True))
    assert conll["tokens"].tolist() == [["EU", "rejects"]] and conll.attrs["skipped_lines"] == [5]
    broken_first = tmp_path / "broken_first.conll"
    broken_first.write_text("EU NNP B-ORG\nrejects O\n\nPeter NNP B-PER\n")
    conll = read_source(SplitSource(str(broken_first)), ReadOptions(skip_bad_lines=True))
    assert conll[ROW_COLUMN].tolist() == [1] and conll["tokens"].tolist() == [["Peter"]]


@pytest.mark.parametrize(
    ("sentences", "broken"),
    [
        ([["B-PER", "I-PER", "O"], ["O", "I-LOC"]], [False, True]),  # IOB2: an I- after O
        ([["B-PER", "I-ORG"], ["O", "B-LOC"]], [True, False]),  # IOB2: a type change inside an entity
        ([["I-PER", "I-PER", "B-PER"], ["O", "I-LOC"]], [False, False]),  # IOB1: I- opens, B- only separates
        ([["S-PER", "O", "B-LOC", "E-LOC"], ["O", "E-LOC"]], [False, True]),  # BIOES
        ([["NN", "VBZ"], ["DT"]], [False, False]),  # part-of-speech tags: not entity tags
    ],
    ids=["iob2-after-outside", "iob2-type-change", "iob1", "bioes", "pos-tags"],
)
def test_broken_entities(sentences: list[list[str]], broken: list[bool]) -> None:
    assert broken_entities(sentences).tolist() == broken


def test_unprefixed_tags_only_among_prefixed_ones() -> None:
    assert unprefixed_tags([["B-PER", "O"], ["PER"], ["B_LOC"]]).tolist() == [False, True, True]
    assert unprefixed_tags([["NN"], ["VBZ"]]).tolist() == [False, False]


def test_real_conll2003_passes_the_tag_checks(shared_data: Path) -> None:
    for name in ("train.txt", "valid.txt", "test.txt"):
        tags = read_conll(str(shared_data / "conll2003" / name), name)["tags"].tolist()
        assert len(tags) > 3000
        assert not broken_entities(tags).any() and not unprefixed_tags(tags).any(), name


def test_bad_data_stops_fit_before_the_model_loads(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The CLI checks and tokenizes the data before building the model: weights that cannot load are never reached."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").write_bytes(b"not weights")
    exit_ = run_cli("fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", model, "--data.train_file",
                    CORPUS / "missing_label.csv", "--data.validation_file", "null", "--data.where", "null")  # fmt: skip
    assert "missing label in column 'label' at row 2" in str(exit_.code)
    exit_ = run_cli("fit", "--config", CONFIGS / "quickstart.yaml", "--model.model_name", model, "--data.train_file",
                    TRAIN, "--data.validation_file", "null", "--data.where", "null")  # fmt: skip
    assert str(exit_.code).startswith(f"bertcls: error: model.model_name '{model}': its weights file could not be read")


def test_fit_warns_when_the_validation_file_repeats_the_training_rows(
    tmp_path: Path, tiny_model_dir: Path, real_words: list[str], lightning_messages: list[str]
) -> None:
    """fit compares the splits as tokenized (also when read from the cache); validate-data compares their texts."""
    train = write_frame(separable_frame(real_words, 20, seed=1), tmp_path / "train.csv")
    unrelated = write_frame(separable_frame(real_words, 10, seed=2), tmp_path / "dev.csv")
    for validation, warned in ((train, True), (unrelated, False)):
        lightning_messages.clear()
        datamodule = ClassificationDataModule(
            train_file=str(train), validation_file=str(validation), tokenizer=str(tiny_model_dir), max_length=16
        )
        datamodule.setup("fit")
        warnings = [message for message in lightning_messages if "warning: the validation data" in message]
        assert warnings == (
            [f"{train}: warning: the validation data is the same as the training data ({train}): 20 of its 20 "
             "examples (100%) also occur there, so validation scores (and the best checkpoint) measure memorisation. "
             "Give a validation file without the training rows, or leave data.validation_file out to hold out "
             "data.validation_fraction of the training rows."] if warned else []
        )  # fmt: skip
