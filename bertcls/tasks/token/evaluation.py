"""Evaluation of the token task: seqeval's entity-level precision, recall and F1, and word tag accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from seqeval.metrics.sequence_labeling import classification_report, get_entities, precision_recall_fscore_support
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from bertcls.reporting.report import TestReport
from bertcls.reporting.tables import TABLE_COLUMNS
from bertcls.tasks.base import Evaluator, TaskHead
from bertcls.tasks.token.alignment import NO_WORD


class EvaluatedWords(Metric):
    """The evaluated words of a split: source row, word index, predicted and gold tag id ("cat" states)."""

    full_state_update = False
    rows: list[torch.Tensor]
    words: list[torch.Tensor]
    predicted: list[torch.Tensor]
    gold: list[torch.Tensor]

    def __init__(self) -> None:
        super().__init__()
        for name in ("rows", "words", "predicted", "gold"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, rows: torch.Tensor, words: torch.Tensor, predicted: torch.Tensor, gold: torch.Tensor) -> None:
        self.rows.append(rows)
        self.words.append(words)
        self.predicted.append(predicted)
        self.gold.append(gold)

    def compute(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The four columns, sorted by (row, word)."""
        if not self.rows:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, empty
        rows, words, predicted, gold = (
            dim_zero_cat(state).cpu().numpy() for state in (self.rows, self.words, self.predicted, self.gold)
        )
        order = np.lexsort((words, rows))
        return rows[order], words[order], predicted[order], gold[order]


def entity_type(tag: str) -> str:
    """The entity type of a tag as seqeval reads it ("B-PER" -> "PER")."""
    return tag[1:].split("-", maxsplit=1)[-1] or "_"


class TokenEvaluator(Evaluator):
    """Entity-level precision, recall and F1 (seqeval, conlleval-compatible: exact spans, BIO or IOBES) and the
    accuracy of word tags. Detailed: the same per entity type, and seqeval's report."""

    def __init__(self, label_names: list[str], prefix: str, detailed: bool) -> None:
        super().__init__(label_names, prefix, detailed)
        self.words = EvaluatedWords()
        self.entity_types = sorted({entity_type(name) for name in label_names if name != "O"})
        self._sequences: tuple[list[list[str]], list[list[str]]] = ([], [])

    def update(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], head: TaskHead) -> None:
        word_ids = batch["word_ids"]
        evaluated = word_ids != NO_WORD
        rows = batch["rows"][:, None].expand_as(word_ids)
        predicted = logits.argmax(dim=-1)
        self.words.update(rows[evaluated], word_ids[evaluated], predicted[evaluated], batch["labels"][evaluated])

    def compute(self, head: TaskHead) -> dict[str, torch.Tensor]:
        rows, _, predicted, gold = self.words.compute()
        gold_tags, predicted_tags = (self._sentences(rows, ids) for ids in (gold, predicted))
        self._sequences = (gold_tags, predicted_tags)
        values = entity_scores(gold_tags, predicted_tags, self.entity_types if self.detailed else [])
        values["token_accuracy"] = float((predicted == gold).mean()) if len(gold) else 0.0
        device = self.words.device
        return {
            self.prefix + name: torch.tensor(value, dtype=torch.float, device=device) for name, value in values.items()
        }

    def _sentences(self, rows: np.ndarray, ids: np.ndarray) -> list[list[str]]:
        names = np.asarray(self.label_names, dtype=object)[ids]
        return [part.tolist() for part in np.split(names, np.flatnonzero(np.diff(rows)) + 1) if len(part)]

    def reset(self) -> None:
        self.words.reset()

    def report(self) -> TestReport | None:
        gold, predicted = self._sequences
        if not get_entities(gold) and not get_entities(predicted):
            empty = pd.DataFrame(columns=TABLE_COLUMNS)
            return TestReport("Test entity report", "No entities in the gold or predicted tags.", empty, f1_of="type")
        table = entity_table(classification_report(gold, predicted, output_dict=True, zero_division=0))
        per_type = dict(zip(table["name"], table["f1"], strict=True))
        return TestReport(
            title="Test entity report (seqeval, conlleval-compatible: exact spans)",
            text=classification_report(gold, predicted, digits=4, zero_division=0),
            table=table,
            # Every entity type of the tag set, as logged (``f1/<type>``): 0 for a type neither gold nor predicted.
            f1={name: float(per_type.get(name, 0.0)) for name in self.entity_types},
            f1_of="type",
        )


def entity_table(report: dict[str, dict[str, float]]) -> pd.DataFrame:
    """seqeval's ``classification_report(output_dict=True)`` as a table: a ``label`` row per entity type found in
    the gold or predicted tags, then its ``average`` rows (micro, macro and weighted avg)."""
    rows = [
        (
            name,
            "average" if name.endswith(" avg") else "label",
            *(float(scores[key]) for key in ("precision", "recall", "f1-score")),
            int(scores["support"]),
        )
        for name, scores in report.items()
    ]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def entity_scores(gold: list[list[str]], predicted: list[list[str]], types: list[str]) -> dict[str, float]:
    """seqeval's micro-averaged entity precision, recall and F1, and the same per type for each of ``types``."""
    precision, recall, f1, _ = precision_recall_fscore_support(gold, predicted, average="micro", zero_division=0)
    values = {"entity_f1": float(f1), "entity_precision": float(precision), "entity_recall": float(recall)}
    if types:
        found = sorted({name for sequences in (gold, predicted) for name, _, _ in get_entities(sequences)})
        per_type = precision_recall_fscore_support(gold, predicted, average=None, zero_division=0)[:3]
        scores = {name: (p, r, f) for name, p, r, f in zip(found, *per_type, strict=True)}
        for name in types:
            p, r, f = scores.get(name, (0.0, 0.0, 0.0))
            values |= {f"f1/{name}": float(f), f"precision/{name}": float(p), f"recall/{name}": float(r)}
    return values
