"""Encoding words into word-piece examples: label alignment to first word pieces, windows over long sentences."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from bertcls.tasks.base import DataSpec

IGNORED = -100  # label of a word piece that is not in the loss
NO_WORD = -1  # word id of a word piece at which no word is evaluated

Window = tuple[int, int, int, int]  # pieces [start, end) in the window, of which [own_start, own_end) are its own


def windows(num_pieces: int, content_length: int, stride: int, split: bool) -> list[Window]:
    """The windows over a sentence of ``num_pieces`` word pieces, ``content_length`` pieces at most each.

    Neighbouring windows share ``stride`` pieces. The owned ranges partition the sentence: window k owns
    ``[k * step + stride // 2, (k + 1) * step + stride // 2)`` (the first from 0, the last to the end), so a
    word evaluated in a window has context on both sides. Without ``split`` there is one window, truncated.
    """
    if num_pieces <= content_length or not split:
        end = min(num_pieces, content_length)
        return [(0, end, 0, end)]
    step = content_length - stride
    count = 1 + -(-(num_pieces - content_length) // step)
    result = []
    for k in range(count):
        start = k * step
        own_start = start + stride // 2 if k > 0 else 0
        own_end = num_pieces if k == count - 1 else start + step + stride // 2
        result.append((start, min(start + content_length, num_pieces), own_start, own_end))
    return result


def inside_tag_ids(names: Sequence[str]) -> list[int]:
    """For each tag id, the id a continuation word piece gets with ``label_all_subtokens``: B-X -> I-X."""
    ids = {name: index for index, name in enumerate(names)}
    return [ids.get("I-" + name[2:], index) if name.startswith("B-") else index for index, name in enumerate(names)]


def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text ([CLS] and [SEP] for BERT)."""
    full = tokenizer("a")["input_ids"]
    content = tokenizer("a", add_special_tokens=False)["input_ids"]
    start = next(index for index in range(len(full)) if full[index : index + len(content)] == content)
    return full[:start], full[start + len(content) :]


@dataclass(frozen=True)
class SentenceEncoder:
    """Turns batches of word lists into windowed examples (the ``datasets.map`` function of ``encode``).

    A word is classified at its first word piece: only there does ``labels`` carry its tag (all its pieces
    do with ``label_all_subtokens``), and only there does ``word_ids`` hold its index in the sentence, so
    that the evaluator and the prediction writer see every word exactly once. Sentences longer than the
    window are split into overlapping windows (or truncated); each window is an example of its own.

    Input columns: ``words``, ``tag_ids`` (labelled splits) and columns passed through unchanged (``row``,
    ``text``, ``offsets``). Output: one example per window with ``input_ids``, ``word_ids``, ``labels``
    (labelled), the passed columns, and ``window`` (its number) and ``cut_words`` (words lost to truncation).
    """

    tokenizer: PreTrainedTokenizerBase
    prefix: list[int]
    suffix: list[int]
    content_length: int  # word pieces per window
    stride: int
    split: bool
    inside: list[int] | None  # label_all_subtokens: continuation pieces' tag ids; None: they are ignored

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        labelled = "tag_ids" in batch
        passed = [name for name in batch if name != "tag_ids"]
        created = ["input_ids", "word_ids", "window", "cut_words"] + (["labels"] if labelled else [])
        outputs: dict[str, list] = {name: [] for name in passed + created}
        for index, (pieces, piece_words) in enumerate(self._pieces(batch["words"])):
            labels, word_ids = self._align(piece_words, batch["tag_ids"][index] if labelled else None)
            spans = windows(len(pieces), self.content_length, self.stride, self.split)
            cut = sum(1 for word in word_ids[spans[-1][1] :] if word != NO_WORD)
            for number, span in enumerate(spans):
                outputs["input_ids"].append(self.prefix + pieces[span[0] : span[1]] + self.suffix)
                outputs["word_ids"].append(self._window(word_ids, span, NO_WORD))
                if labelled:
                    outputs["labels"].append(self._window(labels, span, IGNORED))
                outputs["window"].append(number)
                outputs["cut_words"].append(cut if number == 0 else 0)
                for name in passed:
                    outputs[name].append(batch[name][index])
        return outputs

    def _pieces(self, words: list[list[str]]) -> Iterator[tuple[list[int], list[int]]]:
        """Each sentence's word pieces and the word of each piece.

        A word the tokenizer turns into no piece at all (an empty string, a lone control character) is
        encoded as the unknown token, so that every word is classified.
        """
        encoded = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False, verbose=False)
        for index, sentence in enumerate(words):
            pieces, piece_words = encoded["input_ids"][index], encoded.word_ids(index)
            present = set(piece_words)
            if len(present) < len(sentence):
                unk = self.tokenizer.unk_token
                fixed = [word if position in present else unk for position, word in enumerate(sentence)]
                again = self.tokenizer(fixed, is_split_into_words=True, add_special_tokens=False, verbose=False)
                pieces, piece_words = again["input_ids"], again.word_ids()
            yield pieces, piece_words

    def _align(self, piece_words: list[int], tags: list[int] | None) -> tuple[list[int], list[int]]:
        """Per word piece: its label, and its word's index at the word's first piece (``NO_WORD`` elsewhere)."""
        labels, word_ids = [], []
        previous = None
        for word in piece_words:
            first = word != previous
            previous = word
            word_ids.append(word if first else NO_WORD)
            if tags is None:
                continue
            if first:
                labels.append(tags[word])
            else:
                labels.append(self.inside[tags[word]] if self.inside is not None else IGNORED)
        return labels, word_ids

    def _window(self, values: list[int], span: Window, fill: int) -> list[int]:
        """A window's values: those of its owned pieces kept; its other pieces and special tokens ``fill``."""
        start, end, own_start, own_end = span
        before = [fill] * (len(self.prefix) + own_start - start)
        return before + values[own_start:own_end] + [fill] * (end - own_end + len(self.suffix))


def window_statistics(table: datasets.Dataset, num_sentences: int, spec: DataSpec, where: str) -> dict[str, Any]:
    """``meta`` of an encoded split: counts of truncated and split sentences, and notes for the log."""
    counts = table.select_columns(["window", "cut_words"]).to_pandas()
    window, cut_words = counts["window"].to_numpy(), counts["cut_words"].to_numpy()
    num_truncated = int((cut_words > 0).sum())
    notes = []
    if num_truncated:
        notes.append(
            f"{where}: {int(cut_words.sum())} words of {num_truncated} sentences were cut by truncation at "
            f"max_length {spec.max_length} and are not evaluated; set data.long_inputs: split."
        )
    num_split = int((window == 1).sum())
    if num_split:
        notes.append(
            f"{where}: {num_split} sentences longer than max_length {spec.max_length} were split into "
            f"{'2' if window.max() == 1 else f'2-{int(window.max()) + 1}'} windows sharing {spec.window_stride} "
            "word pieces."
        )
    return {
        "num_examples": len(table),
        "num_sentences": num_sentences,
        "num_truncated": num_truncated,
        "num_split": num_split,
        "max_length": spec.max_length,
        "notes": notes,
    }
