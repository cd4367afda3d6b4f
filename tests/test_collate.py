"""TokenizedDataset (zero-copy view of the encoded Arrow columns) and DynamicPaddingCollator."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from helpers import write_frame

from bertcls.data.collate import DynamicPaddingCollator
from bertcls.data.datamodule import ClassificationDataModule
from bertcls.data.dataset import TokenizedDataset
from bertcls.data.encoding import EncodedSplit, encode_texts

TEXTS = [
    "a fine film",
    "the worst two hours i have ever spent in a cinema , and i have seen many bad films",
    "ok",
    "Unbelievably moving; it's a masterpiece!",
    "naïve but charming",
]


def encode(tokenizer, texts: list[str], labels: list[int] | None, max_length: int = 64) -> EncodedSplit:
    frame = pd.DataFrame({"text": texts, "row": range(10, 10 + len(texts))})
    return encode_texts(frame, tokenizer, "text", None, max_length, labels, where="test data")


def test_dataset_serves_token_ids_labels_and_rows(minilm_tokenizer) -> None:
    dataset = TokenizedDataset(encode(minilm_tokenizer, TEXTS, [0, 1, 0, 1, 1]))
    expected = minilm_tokenizer(TEXTS, truncation=True, max_length=64)["input_ids"]
    assert len(dataset) == len(TEXTS)
    assert dataset.has_labels
    assert dataset.lengths.tolist() == [len(ids) for ids in expected]
    for index, ids in enumerate(expected):
        example = dataset[index]
        assert example["input_ids"].tolist() == ids
        assert example["labels"] == [0, 1, 0, 1, 1][index]
        assert example["rows"] == 10 + index


def test_unlabelled_dataset_has_no_labels(minilm_tokenizer) -> None:
    dataset = TokenizedDataset(encode(minilm_tokenizer, TEXTS, None))
    assert not dataset.has_labels
    assert all(set(dataset[index]) == {"input_ids", "rows"} for index in range(len(dataset)))


def test_dataset_reads_multi_chunk_and_selected_tables(minilm_tokenizer) -> None:
    """More rows than one encoding batch (several Arrow chunks), and a row selection (an indices mapping)."""
    texts = [" ".join(["word"] * (1 + index % 17)) for index in range(2500)]
    encoded = encode(minilm_tokenizer, texts, [index % 3 for index in range(2500)])
    assert encoded.table.data.table.column("input_ids").num_chunks > 1
    for table in (encoded.table, encoded.table.select(range(2499, 0, -7))):
        dataset = TokenizedDataset(EncodedSplit(table, encoded.meta))
        assert len(dataset) == len(table)
        for index in (0, 1, len(table) // 2, len(table) - 1):
            example = dataset[index]
            assert example["input_ids"].tolist() == table[index]["input_ids"]
            assert example["labels"] == table[index]["labels"]
            assert example["rows"] == table[index]["row"]


def test_collator_pads_to_longest_rounded_to_multiple_of_8(minilm_tokenizer) -> None:
    dataset = TokenizedDataset(encode(minilm_tokenizer, TEXTS, [0, 1, 0, 1, 1]))
    examples = [dataset[index] for index in (0, 2, 3)]
    lengths = [len(example["input_ids"]) for example in examples]
    batch = DynamicPaddingCollator(pad_token_id=minilm_tokenizer.pad_token_id, pad_to_multiple_of=8)(examples)
    width = -(-max(lengths) // 8) * 8
    assert max(lengths) % 8 != 0, "the example is meant to need rounding"
    assert batch["input_ids"].shape == (3, width)
    assert batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    for position, ids in enumerate(example["input_ids"] for example in examples):
        assert batch["input_ids"][position, : len(ids)].tolist() == ids.tolist()
        assert (batch["input_ids"][position, len(ids) :] == minilm_tokenizer.pad_token_id).all()
        assert batch["attention_mask"][position, : len(ids)].all()
        assert not batch["attention_mask"][position, len(ids) :].any()
    assert batch["labels"].tolist() == [0, 0, 1]
    assert batch["rows"].tolist() == [10, 12, 13]


def test_collator_without_multiple_pads_to_exact_longest(minilm_tokenizer) -> None:
    dataset = TokenizedDataset(encode(minilm_tokenizer, TEXTS, [0, 1, 0, 1, 1]))
    examples = [dataset[index] for index in range(len(TEXTS))]
    batch = DynamicPaddingCollator(pad_token_id=minilm_tokenizer.pad_token_id, pad_to_multiple_of=None)(examples)
    assert batch["input_ids"].shape[1] == max(len(example["input_ids"]) for example in examples)
    assert batch["attention_mask"].sum().item() == int(dataset.lengths.sum())


def test_collator_leaves_out_labels_for_unlabelled_examples(minilm_tokenizer) -> None:
    dataset = TokenizedDataset(encode(minilm_tokenizer, TEXTS, None))
    batch = DynamicPaddingCollator(pad_token_id=0)([dataset[0], dataset[1]])
    assert "labels" not in batch
    assert batch["rows"].tolist() == [10, 11]


@pytest.mark.parametrize(("multiple", "rounds"), [(None, False), (8, True)])
def test_datamodule_loaders_pad_dynamically(
    tmp_path, tiny_model_dir, minilm_tokenizer, multiple: int | None, rounds: bool
) -> None:
    """Without a trainer (CPU), padding is to the longest example unless pad_to_multiple_of is set."""
    frame = pd.DataFrame({"text": TEXTS * 20, "label": ["pos", "neg", "pos", "neg", "pos"] * 20})
    datamodule = ClassificationDataModule(
        train_file=str(write_frame(frame, tmp_path / "train.csv")),
        validation_file=str(write_frame(frame.head(30), tmp_path / "validation.csv")),
        tokenizer=str(tiny_model_dir),
        batch_size=8,
        pad_to_multiple_of=multiple,
    )
    datamodule.build_cache()
    datamodule.setup("fit")
    seen = 0
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        for batch in loader:
            lengths = batch["attention_mask"].sum(dim=1)
            width = batch["input_ids"].shape[1]
            assert width == (-(-int(lengths.max()) // 8) * 8 if rounds else int(lengths.max()))
            assert (batch["input_ids"][batch["attention_mask"] == 0] == minilm_tokenizer.pad_token_id).all()
            seen += len(lengths)
    assert seen == 100 + 30
