"""The on-disk tokenization cache: reuse, invalidation, truncation statistics."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import datasets
import pandas as pd
import pytest
from helpers import separable_frame, write_frame

from bertcls.data.datamodule import ClassificationDataModule
from bertcls.data.encoding import EncodingCache, default_cache_dir

FRAME = pd.DataFrame(
    {
        "text": [
            "short",
            "a somewhat longer sentence about a film",
            "one two three four five six seven eight nine ten eleven twelve",
            "a decent if forgettable comedy",
            "a b c d",
            "not bad at all",
        ],
        "label": ["pos", "neg", "pos", "neg", "pos", "neg"],
    }
)


@pytest.fixture
def encode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count real tokenizations: wrap the data module's ``_encode`` (records each encoded source)."""
    calls: list[str] = []
    original = ClassificationDataModule._encode

    def counting(self, split, vocabulary):
        calls.append(self.sources[split].describe())
        return original(self, split, vocabulary)

    monkeypatch.setattr(ClassificationDataModule, "_encode", counting)
    return calls


def entries(cache: Path) -> set[str]:
    """Complete cache entries (staging folders start with a dot and never stay behind; lock files may)."""
    return {path.name for path in cache.iterdir() if path.suffix != ".lock"} if cache.exists() else set()


def make(tokenizer: Path, train: Path, validation: Path, **kwargs) -> ClassificationDataModule:
    return ClassificationDataModule(
        train_file=str(train), validation_file=str(validation), tokenizer=str(tokenizer), **kwargs
    )


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return write_frame(FRAME, tmp_path / "train.csv"), write_frame(FRAME.head(4), tmp_path / "validation.csv")


def test_cache_lives_under_bertcls_cache(bertcls_cache: Path, tiny_model_dir: Path, files) -> None:
    assert default_cache_dir() == bertcls_cache
    make(tiny_model_dir, *files).build_cache()
    assert len(entries(bertcls_cache)) == 2
    assert all((bertcls_cache / name / "meta.json").is_file() for name in entries(bertcls_cache))


def test_second_build_cache_does_not_tokenize_again(
    bertcls_cache: Path, tiny_model_dir: Path, files, encode_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make(tiny_model_dir, *files)
    first.build_cache()
    first.setup("fit")
    assert len(encode_calls) == 2
    before = entries(bertcls_cache)

    loads: list[str] = []
    original_load = EncodingCache.load
    monkeypatch.setattr(EncodingCache, "load", lambda self, key: loads.append(key) or original_load(self, key))
    second = make(tiny_model_dir, *files)  # a fresh module, as in a new run
    second.build_cache()
    second.setup("fit")
    assert len(encode_calls) == 2, "nothing was tokenized again"
    assert entries(bertcls_cache) == before
    assert set(loads) == before, "both splits came from the cache"
    for split in ("train", "validation"):
        assert (second.datasets[split].lists["input_ids"][1] == first.datasets[split].lists["input_ids"][1]).all()
        assert (second.datasets[split].scalars["labels"] == first.datasets[split].scalars["labels"]).all()


def test_changing_max_length_creates_new_entries(
    bertcls_cache: Path, tiny_model_dir: Path, files, encode_calls: list[str]
) -> None:
    make(tiny_model_dir, *files, max_length=128).build_cache()
    before = entries(bertcls_cache)
    make(tiny_model_dir, *files, max_length=8).build_cache()
    after = entries(bertcls_cache)
    assert len(encode_calls) == 4
    assert len(after) == 4 and before < after


def test_changing_file_content_creates_a_new_entry(
    bertcls_cache: Path, tiny_model_dir: Path, files, encode_calls: list[str]
) -> None:
    train, validation = files
    make(tiny_model_dir, train, validation).build_cache()
    before = entries(bertcls_cache)
    changed = FRAME.copy()
    changed.loc[0, "text"] = "completely different words"
    write_frame(changed, train)  # same path, new content
    module = make(tiny_model_dir, train, validation)
    module.build_cache()
    module.setup("fit")
    assert len(encode_calls) == 3, "only the changed training file is tokenized again"
    assert len(entries(bertcls_cache) - before) == 1
    first_ids = module.datasets["train"][0]["input_ids"]
    assert module.tokenizer.decode(first_ids, skip_special_tokens=True) == "completely different words"


def test_changing_the_row_filter_or_columns_creates_new_entries(
    bertcls_cache: Path, tiny_model_dir: Path, tmp_path: Path, encode_calls: list[str]
) -> None:
    frame = FRAME.assign(source=["a", "a", "b", "b", "a", "b"], review=FRAME["text"].str.upper())
    train = write_frame(frame, tmp_path / "train.csv")
    for kwargs in ({}, {"where": {"source": "a"}}, {"text_column": "review"}):
        ClassificationDataModule(train_file=str(train), tokenizer=str(tiny_model_dir), **kwargs).build_cache()
    assert len(encode_calls) == 3
    assert len(entries(bertcls_cache)) == 3


def test_truncated_examples_are_counted(tiny_model_dir: Path, minilm_tokenizer, files) -> None:
    max_length = 6
    full_lengths = [len(ids) for ids in minilm_tokenizer(FRAME["text"].tolist())["input_ids"]]
    assert max_length in full_lengths, "one text fits exactly: it must not count as truncated"
    expected = sum(length > max_length for length in full_lengths)
    assert expected == 3

    module = make(tiny_model_dir, *files, max_length=max_length)
    module.build_cache()
    encoded = module._encoded("train")
    assert encoded.num_truncated == expected
    assert encoded.meta["num_examples"] == len(FRAME)
    assert encoded.meta["max_length"] == max_length
    module.setup("fit")
    assert module.datasets["train"].lengths.max() == max_length

    roomy = make(tiny_model_dir, *files, max_length=64)
    roomy.build_cache()
    assert roomy._encoded("train").num_truncated == 0


def test_truncation_is_reported(tiny_model_dir: Path, files, lightning_messages: list[str]) -> None:
    module = make(tiny_model_dir, *files, max_length=6)
    module.build_cache()
    module.setup("fit")
    assert any("3 of 6 inputs" in message and "max_length=6" in message for message in lightning_messages)


BUILDER = """
import sys, time
from pathlib import Path
from bertcls.data.datamodule import ClassificationDataModule

train, tokenizer, cache, lock, go = sys.argv[1:]
module = ClassificationDataModule(train_file=train, tokenizer=tokenizer, cache_dir=cache, cache_lock=lock)
module.tokenizer  # loaded before the start line, so both processes race only on the cache
print("READY", flush=True)
while not Path(go).exists():
    time.sleep(0.01)
module._encode = lambda *args, _encode=module._encode: print("TOKENIZING", flush=True) or _encode(*args)
module.build_cache("fit")
print(len(module._encoded("train").table), flush=True)
"""


@pytest.mark.parametrize("lock", ["file", "soft"])
def test_concurrent_ranks_tokenize_once_and_both_read_the_entry(
    tmp_path: Path, tiny_model_dir: Path, real_words: list[str], lock: str
) -> None:
    """Two processes start building the same cache at the same instant: one tokenizes, the other waits on
    the lock file (no collective involved) and then reads the finished entry."""
    train = write_frame(separable_frame(real_words, 6000, seed=4), tmp_path / "train.csv")
    go = tmp_path / "go"
    command = [sys.executable, "-c", BUILDER, str(train), str(tiny_model_dir), str(tmp_path / "cache"), lock, str(go)]
    builders = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert all(builder.stdout.readline().strip() == "READY" for builder in builders)
    go.touch()
    outputs = [builder.communicate(timeout=300) for builder in builders]
    assert all(builder.returncode == 0 for builder in builders), [err[-2000:] for _, err in outputs]
    stdouts = [out.split() for out, _ in outputs]
    assert sum(out.count("TOKENIZING") for out in stdouts) == 1, stdouts
    assert all(out[-1] == "6000" for out in stdouts), stdouts


def test_a_full_disk_leaves_no_entry_and_says_where(
    tmp_path: Path, tiny_model_dir: Path, real_words: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(self, path: str, **kwargs) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", no_space)
    cache = tmp_path / "cache"
    train = write_frame(separable_frame(real_words, 40, seed=1), tmp_path / "train.csv")
    module = ClassificationDataModule(tokenizer=str(tiny_model_dir), train_file=str(train), cache_dir=str(cache))
    with pytest.raises(OSError, match=rf"No space left on device while writing the tokenization cache in {cache}"):
        module.build_cache()
    assert [path.name for path in cache.iterdir() if not path.name.endswith(".lock")] == []
