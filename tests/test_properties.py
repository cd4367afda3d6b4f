"""Property-based tests (hypothesis) of the readers, the sampler and the collate function: random lengths, random
labels and random text, with the invariants the rest of bertcls relies on."""

from __future__ import annotations

import json
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bertcls.data.collate import DynamicPaddingCollator
from bertcls.data.sampler import LengthBucketBatchSampler
from bertcls.data.sources import ROW_COLUMN, ReadOptions, read_file
from bertcls.data.validation import CheckedRows, drop_or_raise
from bertcls.errors import DataError
from bertcls.tasks import DataSpec, get_task

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the sampler ----------------------------------------------------------------------------------------
@st.composite
def sampler_cases(draw: st.DrawFn) -> dict:
    replicas = draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(1, 512), min_size=replicas, max_size=300))
    batch = draw(st.integers(1, 64))
    assume(batch > 1 or len(lengths) % replicas == 0)  # batches of one cannot always be shared evenly
    return {
        "lengths": np.array(lengths),
        "max_batch_size": batch,
        "num_replicas": replicas,
        "shuffle": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
        "pool_batches": draw(st.integers(1, 64)),
    }


def rank_batches(case: dict, epoch: int = 0) -> list[list[list[int]]]:
    batches = []
    for rank in range(case["num_replicas"]):
        sampler = LengthBucketBatchSampler(**case, rank=rank)
        sampler.set_epoch(epoch)
        batches.append(list(sampler))
    return batches


@SETTINGS
@given(sampler_cases(), st.integers(0, 5))
def test_every_example_once_per_epoch_same_batch_count_on_every_rank(case: dict, epoch: int) -> None:
    batches = rank_batches(case, epoch)
    counts = {len(rank) for rank in batches}
    assert counts == {len(LengthBucketBatchSampler(**case))}, "ranks must take the same number of steps (DDP)"
    seen = [index for rank in batches for batch in rank for index in batch]
    assert sorted(seen) == list(range(len(case["lengths"])))
    assert all(0 < len(batch) <= case["max_batch_size"] for rank in batches for batch in rank)


@SETTINGS
@given(sampler_cases(), st.integers(0, 3), st.data())
def test_resume_yields_exactly_the_batches_not_yet_trained(case: dict, epoch: int, data: st.DataObject) -> None:
    full = rank_batches(case, epoch)[0]
    done = data.draw(st.integers(0, len(full)))
    sampler = LengthBucketBatchSampler(**case, rank=0)
    sampler.set_epoch(epoch)
    sampler.resume_at(epoch, done)
    assert list(sampler) == full[done:]
    assert list(sampler) == full, "the skip applies once"


@SETTINGS
@given(sampler_cases())
def test_the_order_is_a_function_of_seed_and_epoch(case: dict) -> None:
    assert rank_batches(case, 1) == rank_batches(case, 1)


# --- the collate function ------------------------------------------------------------------------------
@st.composite
def examples(draw: st.DrawFn) -> tuple[list[dict], int | None]:
    count = draw(st.integers(1, 16))
    multiple = draw(st.sampled_from([None, 1, 8]))
    batch = []
    for row in range(count):
        length = draw(st.integers(1, 64))
        ids = draw(st.lists(st.integers(1, 30_000), min_size=length, max_size=length))
        tags = draw(st.lists(st.integers(-100, 8), min_size=length, max_size=length))
        batch.append({
            "input_ids": np.array(ids), "token_type_ids": np.zeros(length, dtype=np.int64),
            "labels": np.array(tags), "rows": row,
        })  # fmt: skip
    return batch, multiple


@SETTINGS
@given(examples())
def test_collate_pads_each_example_and_keeps_its_tokens(case: tuple[list[dict], int | None]) -> None:
    batch_examples, multiple = case
    collate = DynamicPaddingCollator(pad_token_id=0, pad_to_multiple_of=multiple, padded_columns={"labels": -100})
    batch = collate(batch_examples)
    longest = max(len(example["input_ids"]) for example in batch_examples)
    width = batch["input_ids"].shape[1]
    assert width >= longest and width - longest < (multiple or 1) and width % (multiple or 1) == 0
    for row, example in enumerate(batch_examples):
        length = len(example["input_ids"])
        assert int(batch["attention_mask"][row].sum()) == length
        assert torch.equal(batch["input_ids"][row, :length], torch.as_tensor(example["input_ids"]))
        assert torch.equal(batch["labels"][row, :length], torch.as_tensor(example["labels"]))
        assert (batch["input_ids"][row, length:] == 0).all() and (batch["labels"][row, length:] == -100).all()
    assert batch["rows"].tolist() == list(range(len(batch_examples)))


# --- the readers -----------------------------------------------------------------------------------------
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\u2028\u2029\x85"),
    min_size=1,
    max_size=80,
).filter(lambda text: text.strip() == text and text.strip())
TEXT = st.one_of(TEXT, st.sampled_from(["NA", "null", "None", "nan", "N/A", "#N/A", "1e5", "007", "True", "-"]))
LABELS = st.sampled_from(["pos", "neg", "0", "1", "ünïcode", "with,comma", 'with "quotes"'])


@SETTINGS
@given(st.lists(st.tuples(TEXT, LABELS), min_size=1, max_size=30), st.sampled_from(["csv", "tsv", "jsonl", "parquet"]))
def test_readers_return_every_text_and_label_unchanged_in_file_order(rows: list, suffix: str) -> None:
    """Commas, quotes, non-ASCII, words pandas would read as missing ("NA", "null"), numbers-as-text ("007"): each
    format gives back exactly what was written."""
    if suffix == "tsv":
        assume(all("\t" not in text and '"' not in text for text, _ in rows))  # TSV fields are literal: no tabs
    frame = pd.DataFrame({"text": [text for text, _ in rows], "label": [label for _, label in rows]})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data.{suffix}"
        if suffix == "csv":
            frame.to_csv(path, index=False)
        elif suffix == "tsv":
            lines = ["text\tlabel", *(f"{text}\t{label}" for text, label in rows)]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        elif suffix == "jsonl":
            path.write_text("".join(json.dumps(record) + "\n" for record in frame.to_dict("records")), encoding="utf-8")
        else:
            frame.to_parquet(path)
        read = read_file(str(path), ReadOptions(text_columns=("text",)))
    assert ROW_COLUMN not in read.columns or read[ROW_COLUMN].tolist() == list(range(len(rows)))
    assert read["text"].astype(str).tolist() == frame["text"].tolist()
    assert read["label"].astype(str).tolist() == frame["label"].tolist()


def test_the_data_module_reads_its_text_columns_as_text(tmp_path: Path) -> None:
    """Found by the property test above: "007" and "1e5" in a CSV text column came back as 7 and 100000.0."""
    from bertcls.data.datamodule import ClassificationDataModule
    from bertcls.data.sources import SplitSource, read_source

    path = tmp_path / "pairs.csv"
    path.write_text("premise,hypothesis,label\n007,1e5,1\nNA,0.50,0\n", encoding="utf-8")
    module = ClassificationDataModule(task="pair", text_column="premise", text_pair_column="hypothesis")
    frame = read_source(SplitSource(str(path)), module.read_options)
    assert frame["premise"].tolist() == ["007", "NA"] and frame["hypothesis"].tolist() == ["1e5", "0.50"]
    assert frame["label"].tolist() == [1, 0], "labels keep their types"


# --- the up-front row checks ----------------------------------------------------------------------------
TEXT_CELLS = st.one_of(st.none(), st.sampled_from(["", " ", "\t\n"]), st.text(min_size=1))
LABEL_CELLS = st.one_of(st.none(), st.sampled_from(["pos", "neg", "neutral"]))


def shows_something(text: str) -> bool:
    """Has a character a reader sees: not whitespace, control, format (zero-width) or separator (docs/data.md)."""
    return any(not char.isspace() and unicodedata.category(char) not in ("Cc", "Cf", "Zs", "Zl", "Zp") for char in text)


@SETTINGS
@given(st.lists(st.tuples(TEXT_CELLS, LABEL_CELLS), min_size=1, max_size=60))
def test_skip_invalid_keeps_exactly_the_usable_rows(cells: list[tuple[str | None, str | None]]) -> None:
    frame = pd.DataFrame(cells, columns=["text", "label"], dtype=object)
    frame[ROW_COLUMN] = range(len(frame))
    usable = [row for row, (text, label) in enumerate(cells) if text and shows_something(text) and label is not None]
    rows = CheckedRows(frame, [], get_task("single_label").invalid_rows(frame, DataSpec(), None, True), [])
    if len(usable) == len(cells):
        assert drop_or_raise(rows, "x.csv", skip=False)[1] == 0
        return
    with pytest.raises(DataError, match=r"^x\.csv: .*rows counted from 1"):
        drop_or_raise(rows, "x.csv", skip=False)
    if not usable:
        with pytest.raises(DataError, match=r"all \d+ rows are invalid"):
            drop_or_raise(rows, "x.csv", skip=True)
        return
    kept, dropped, note = drop_or_raise(rows, "x.csv", skip=True)
    assert kept[ROW_COLUMN].tolist() == usable
    assert dropped == len(cells) - len(usable) and f"skipped {dropped} of {len(cells)} rows" in note
