"""The token task: its head (a tag per word piece), encoding of splits, and prediction records with entities."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import datasets
import numpy as np
import pandas as pd
import torch
from seqeval.metrics.sequence_labeling import get_entities
from torch import nn
from transformers import PreTrainedTokenizerBase

from bertcls.data.conll import LINE_COLUMN
from bertcls.data.dataset import TokenizedDataset
from bertcls.data.encoding import ENCODE_BATCH_SIZE, EncodedSplit, quiet_datasets
from bertcls.data.labels import LabelVocabulary
from bertcls.data.sources import ROW_COLUMN
from bertcls.data.texts import TextColumn
from bertcls.data.validation import InvalidRows, rows_with, unknown_labels
from bertcls.errors import InputError
from bertcls.tasks.base import DataSpec, HeadOptions, Task, TaskHead
from bertcls.tasks.token.alignment import (
    IGNORED,
    NO_WORD,
    SentenceEncoder,
    inside_tag_ids,
    special_affixes,
    window_statistics,
)
from bertcls.tasks.token.evaluation import TokenEvaluator
from bertcls.tasks.token.reading import (
    LIST_FIX,
    as_string_list,
    read_sentences,
    split_text,
    string_lists,
    tags_to_ids,
)
from bertcls.tasks.token.tag_scheme import broken_entities, unprefixed_tags

PREDICTED = ("rows", "word_ids", "tag_ids", "scores")  # the per-word outputs of ``TokenHead.predict``
WORD_SCORES = "word_scores"  # in a partial record (a rank that predicted only some windows of the row)


class TokenHead(TaskHead):
    """One tag per word piece: dropout, linear; cross-entropy over the labelled pieces (optional class weights)."""

    def __init__(self, hidden_size: int, num_labels: int, options: HeadOptions) -> None:
        super().__init__()
        self.dropout = nn.Dropout(options.dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        # Persistent: weights computed from the training data ("balanced") travel with the checkpoint.
        self.register_buffer("loss_weights", options.loss_weights)
        self.label_smoothing = options.label_smoothing

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooler_output: torch.Tensor | None
    ) -> torch.Tensor:
        return self.classifier(self.dropout(hidden_states))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy averaged over the labelled pieces as ``reduction="mean"`` does (weighted by their class
        weights), but 0 rather than NaN for a batch without any (windows that own no word's first piece), and
        without a host-device synchronisation to find out."""
        labels, weights = labels.flatten(), self.fp32_loss_weights
        losses = nn.functional.cross_entropy(
            logits.float().flatten(0, 1),
            labels,
            weight=weights,
            ignore_index=IGNORED,
            label_smoothing=self.label_smoothing,
            reduction="none",
        )
        labelled = (labels != IGNORED).float()
        if weights is not None:
            labelled = labelled * weights[labels.clamp(min=0)]
        return losses.sum() / labelled.sum().clamp(min=torch.finfo(losses.dtype).tiny)

    def predict(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per evaluated word: ``rows``, ``word_ids``, ``tag_ids``, ``scores``; per example: ``sentence_rows``."""
        word_ids = batch["word_ids"]
        evaluated = word_ids != NO_WORD
        scores, tag_ids = logits.float().softmax(dim=-1).max(dim=-1)
        rows = batch["rows"][:, None].expand_as(word_ids)
        return {
            "rows": rows[evaluated],
            "word_ids": word_ids[evaluated],
            "tag_ids": tag_ids[evaluated],
            "scores": scores[evaluated],
            "sentence_rows": batch["rows"],
        }


class TokenTask(Task):
    """One tag per word, from ``tokens_column`` / ``tags_column`` lists (CoNLL files provide both).

    The predict split takes the word lists, or, without them, raw text in ``text_column``, split into words
    by the tokenizer's pre-tokenizer (predicted entities then carry character offsets into that text).
    """

    name = "token"
    monitor = "val/entity_f1"
    txt_format = "conll"
    padded_columns = {"labels": IGNORED, "word_ids": NO_WORD}
    head_class = TokenHead
    evaluator_class = TokenEvaluator

    def check_text_columns(self, text_column: TextColumn, text_pair_column: TextColumn | None) -> None:
        """Predicted entities point into one raw text (character offsets): a text joined from columns has none."""
        super().check_text_columns(text_column, text_pair_column)
        if not isinstance(text_column, str):
            raise InputError(
                f"data.text_column {list(text_column)}: the token task reads raw text from one column (its entities' "
                "character offsets point into it), not a list. Name one column, e.g. --data.text_column "
                f"{text_column[0]}, or join the columns into one column of the file first."
            )

    def columns(self, spec: DataSpec, labelled: bool, available: Sequence[str]) -> list[str]:
        if labelled:
            columns = [spec.tokens_column, spec.tags_column]
        elif spec.tokens_column in available or spec.text_column not in available:
            columns = [spec.tokens_column]
        else:
            columns = [spec.text_column]
        return columns + ([LINE_COLUMN] if LINE_COLUMN in available else [])

    def invalid_rows(
        self, frame: pd.DataFrame, spec: DataSpec, vocabulary: LabelVocabulary | None, labelled: bool
    ) -> list[InvalidRows]:
        """Empty raw texts (predict); cells that are not lists of strings; for labelled splits also sentences with
        no words or with as many tags as words, unknown tags, and broken entity tag sequences (``tag_scheme``)."""
        invalid = super().invalid_rows(frame, spec, vocabulary, labelled)
        columns = [spec.tokens_column] + ([spec.tags_column] if labelled else [])
        lists = {column: frame[column].map(as_string_list) for column in columns if column in frame.columns}
        for column, values in lists.items():
            invalid.append(
                InvalidRows(
                    f"a value that is not a list of strings in column '{column}'",
                    values.isna().to_numpy(),
                    LIST_FIX,
                )
            )
        if not labelled:
            return invalid
        usable = np.flatnonzero(lists[spec.tokens_column].notna() & lists[spec.tags_column].notna())
        words = [lists[spec.tokens_column].iloc[index] for index in usable]
        tags = [lists[spec.tags_column].iloc[index] for index in usable]
        empty = np.array([not sentence for sentence in words], dtype=bool)
        invalid.append(
            InvalidRows(
                f"no words in column '{spec.tokens_column}'", rows_with(empty, usable, len(frame)), "remove those rows"
            )
        )
        uneven = np.array([len(a) != len(b) for a, b in zip(words, tags, strict=True)], dtype=bool)
        problem = f"a different number of tokens ('{spec.tokens_column}') and tags ('{spec.tags_column}')"
        invalid.append(InvalidRows(problem, rows_with(uneven, usable, len(frame)), "give exactly one tag per token"))
        if vocabulary is not None:
            flat = pd.Series([tag for sentence in tags for tag in sentence], dtype=object)
            positions = np.repeat(usable, [len(sentence) for sentence in tags])
            invalid.append(unknown_labels(flat, positions, len(frame), vocabulary, False, spec.tags_column))
        problem = f"a tag without a B-/I-/E-/S- prefix among prefixed ones in column '{spec.tags_column}'"
        invalid.append(
            InvalidRows(
                problem, rows_with(unprefixed_tags(tags), usable, len(frame)), "write 'B-TYPE', 'I-TYPE' or 'O'"
            )
        )
        problem = f"an I-/E- tag that continues no entity (after 'O' or another type) in column '{spec.tags_column}'"
        fix = "start each entity with B-TYPE (IOB2); a cut or mislabelled entity shows like this"
        invalid.append(InvalidRows(problem, rows_with(broken_entities(tags), usable, len(frame)), fix))
        return invalid

    def label_occurrences(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> pd.Series:
        _, tags = read_sentences(frame, spec, where)
        return (
            pd.Series([tag for sentence in tags for tag in sentence], dtype=object)
            .value_counts()
            .rename(spec.tags_column)
        )

    def label_values(self, frame: pd.DataFrame, spec: DataSpec, where: str) -> list[str]:
        _, tags = read_sentences(frame, spec, where)
        return sorted({tag for sentence in tags for tag in sentence})

    def encode(
        self,
        frame: pd.DataFrame,
        tokenizer: PreTrainedTokenizerBase,
        spec: DataSpec,
        vocabulary: LabelVocabulary | None,
        where: str,
    ) -> EncodedSplit:
        columns, features = self._inputs(frame, tokenizer, spec, vocabulary, where)
        raw = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
        features.pop("tag_ids", None)
        features |= {name: datasets.List(datasets.Value("int32")) for name in ("input_ids", "word_ids")}
        features |= {name: datasets.Value("int32") for name in ("window", "cut_words")}
        if vocabulary is not None:
            features["labels"] = datasets.List(datasets.Value("int32"))
        with quiet_datasets():
            table = raw.map(
                self._encoder(tokenizer, spec, vocabulary),
                batched=True,
                batch_size=ENCODE_BATCH_SIZE,
                remove_columns=raw.column_names,
                features=datasets.Features(features),
            )
        meta = window_statistics(table, len(frame), spec, where)
        return EncodedSplit(table=table.remove_columns(["window", "cut_words"]), meta=meta)

    @staticmethod
    def _encoder(
        tokenizer: PreTrainedTokenizerBase, spec: DataSpec, vocabulary: LabelVocabulary | None
    ) -> SentenceEncoder:
        prefix, suffix = special_affixes(tokenizer)
        content_length = spec.max_length - len(prefix) - len(suffix)
        split = spec.long_inputs == "split"
        if split and content_length - spec.window_stride < 1:
            raise InputError(
                f"data.max_length {spec.max_length} leaves no room for windows sharing data.window_stride "
                f"{spec.window_stride} word pieces: raise max_length or lower window_stride."
            )
        inside = inside_tag_ids(vocabulary.names) if vocabulary is not None and spec.label_all_subtokens else None
        return SentenceEncoder(tokenizer, prefix, suffix, content_length, spec.window_stride, split, inside)

    @staticmethod
    def _inputs(
        frame: pd.DataFrame,
        tokenizer: PreTrainedTokenizerBase,
        spec: DataSpec,
        vocabulary: LabelVocabulary | None,
        where: str,
    ) -> tuple[dict[str, list], dict[str, Any]]:
        """The columns to encode (``row``, ``words``; ``tag_ids``, or raw ``text`` and ``offsets``) and their types."""
        strings = datasets.List(datasets.Value("string"))
        columns: dict[str, list] = {ROW_COLUMN: frame[ROW_COLUMN].tolist()}
        features: dict[str, Any] = {ROW_COLUMN: datasets.Value("int64"), "words": strings}
        if vocabulary is not None:
            columns["words"], tags = read_sentences(frame, spec, where)
            columns["tag_ids"] = tags_to_ids(tags, frame, vocabulary, f"{where}: column '{spec.tags_column}'")
            features["tag_ids"] = datasets.List(datasets.Value("int32"))
        elif spec.tokens_column in frame.columns:
            columns["words"] = string_lists(frame, spec.tokens_column, where)
        else:
            columns["text"] = frame[spec.text_column].astype(str).tolist()
            split = [split_text(text, tokenizer) for text in columns["text"]]
            columns["words"] = [words for words, _ in split]
            columns["offsets"] = [offsets for _, offsets in split]
            features["text"] = datasets.Value("string")
            features["offsets"] = datasets.List(datasets.List(datasets.Value("int32")))
        return columns, features

    def label_counts(self, dataset: TokenizedDataset, num_labels: int) -> tuple[np.ndarray, int]:
        labels = dataset.lists["labels"][1]
        labelled = labels[labels != IGNORED]
        return np.bincount(labelled, minlength=num_labels), len(labelled)

    def prediction_records(
        self, outputs: dict[str, torch.Tensor], label_names: list[str], dataset: TokenizedDataset, top_k: int = 1
    ) -> Iterator[dict[str, Any]]:
        """Per row: its words, the predicted tag of each word and the entities (seqeval's spans).

        An entity's ``start_char`` / ``end_char`` index the original text for raw-text input, and for word
        input the words joined by single spaces. A word that was not classified (cut by ``long_inputs:
        truncate``) has the tag None and belongs to no entity. Under DDP the windows of a long sentence may
        be predicted by different ranks: a rank that has only some of a row's windows makes a partial record
        (its words' scores instead of entities), which ``merged_records`` completes.
        """
        rows, word_ids, tag_ids, scores = (outputs[name].cpu().numpy() for name in PREDICTED)
        order = np.lexsort((word_ids, rows))
        rows, word_ids, tag_ids, scores = rows[order], word_ids[order], tag_ids[order], scores[order]
        sentence_rows, windows_seen = np.unique(outputs["sentence_rows"].cpu().numpy(), return_counts=True)
        # Every window of a sentence holds its words (and text); read them from its first window.
        dataset_rows, first_windows, windows = np.unique(dataset.rows, return_index=True, return_counts=True)
        positions = np.searchsorted(dataset_rows, sentence_rows)
        complete = (windows_seen == windows[positions]).tolist()
        sources = dataset.table.select(first_windows[positions].tolist()).select_columns(_source_columns(dataset))
        starts, ends = np.searchsorted(rows, sentence_rows), np.searchsorted(rows, sentence_rows, side="right")
        for row, source, start, end, whole in zip(sentence_rows.tolist(), sources, starts, ends, complete, strict=True):
            words = source["words"]
            tags: list[str | None] = [None] * len(words)
            word_scores = [0.0] * len(words)
            for word, tag, score in zip(word_ids[start:end], tag_ids[start:end], scores[start:end], strict=True):
                tags[word], word_scores[word] = label_names[tag], float(score)
            record: dict[str, Any] = {"row": row, "tokens": words, "tags": tags}
            if whole:
                record["entities"] = _entities(tags, word_scores, source)
            else:
                record[WORD_SCORES] = word_scores
            yield record

    def merged_records(
        self, parts: Iterator[list[dict[str, Any]]], label_names: list[str], dataset: TokenizedDataset
    ) -> Iterator[dict[str, Any]]:
        """Complete records pass; the partial records of a row (from several ranks) are joined word by word."""
        sources, dataset_rows, first_windows = None, None, None
        for records in parts:
            if len(records) == 1 and WORD_SCORES not in records[0]:
                yield records[0]
                continue
            if sources is None:
                sources = dataset.table.select_columns(_source_columns(dataset))
                dataset_rows, first_windows = np.unique(dataset.rows, return_index=True)
            row = records[0]["row"]
            source = sources[int(first_windows[np.searchsorted(dataset_rows, row)])]
            tags, word_scores = list(records[0]["tags"]), list(records[0][WORD_SCORES])
            for record in records[1:]:
                for word, (tag, score) in enumerate(zip(record["tags"], record[WORD_SCORES], strict=True)):
                    if tag is not None:  # every word is classified in one window only
                        tags[word], word_scores[word] = tag, score
            yield {
                "row": row,
                "tokens": records[0]["tokens"],
                "tags": tags,
                "entities": _entities(tags, word_scores, source),
            }


def _source_columns(dataset: TokenizedDataset) -> list[str]:
    """The encoded split's columns that hold a sentence's words (and its raw text with the words' offsets)."""
    return [name for name in ("words", "text", "offsets") if name in dataset.table.column_names]


def _entities(tags: list[str | None], scores: list[float], source: dict[str, Any]) -> list[dict[str, Any]]:
    """The entities of one sentence's predicted tags, with word and character spans and mean word scores."""
    words = source["words"]
    if "offsets" in source:
        text, offsets = source["text"], source["offsets"]
    else:
        text = " ".join(words)
        starts = np.cumsum([0] + [len(word) + 1 for word in words[:-1]]).tolist() if words else []
        offsets = [[start, start + len(word)] for start, word in zip(starts, words, strict=True)]
    entities = []
    for kind, first, last in get_entities([tag or "O" for tag in tags]):
        start_char, end_char = offsets[first][0], offsets[last][1]
        entities.append(
            {
                "type": kind,
                "text": text[start_char:end_char],
                "start_word": first,
                "end_word": last + 1,
                "start_char": start_char,
                "end_char": end_char,
                "score": round(float(np.mean(scores[first : last + 1])), 6),
            }
        )
    return entities
