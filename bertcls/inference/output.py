"""Prediction files: JSON Lines or CSV, chosen by the output file's suffix, each written whole or not at all.

A record is what a task's ``prediction_records`` yields, with the row's ``id`` in front. JSON Lines holds it
as it is, one object per line. A CSV row flattens it: ``probabilities`` becomes one ``p_<label>`` column per
label, ``top_k`` becomes ``label_2, score_2, ..., label_k, score_k`` (the best is already ``label`` and
``score``), and any other list or object (multi-label ``labels``, the token task's ``tokens``, ``tags`` and
``entities``) becomes a JSON string.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from bertcls.atomic_files import atomic_write, atomic_write_text
from bertcls.errors import InputError

FORMATS = {".jsonl": "jsonl", ".csv": "csv"}


def output_format(path: str | Path) -> str:
    """``jsonl`` or ``csv`` from the suffix of ``path``; any other suffix raises an ``InputError``."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"--predictions.output_file {path}: cannot tell the output format from the suffix '{suffix}'; "
            f"end the name with {' or '.join(FORMATS)}."
        )
    return FORMATS[suffix]


def json_line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def csv_fields(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row from a record (see the module's docstring)."""
    fields: dict[str, Any] = {}
    for key, value in record.items():
        if key == "probabilities":
            fields |= {f"p_{label}": probability for label, probability in value.items()}
        elif key == "top_k":
            for rank, entry in enumerate(value[1:], start=2):
                fields |= {f"label_{rank}": entry["label"], f"score_{rank}": entry["score"]}
        elif isinstance(value, list | dict):
            fields[key] = json.dumps(value, ensure_ascii=False)
        else:
            fields[key] = value
    return fields


def write_predictions(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write ``records`` to ``path`` in the format of its suffix, atomically; returns how many were written."""
    fmt = output_format(path)
    count = 0

    def write(file: BinaryIO) -> None:
        nonlocal count
        if fmt == "jsonl":
            for record in records:
                file.write(json_line(record))
                count += 1
            return
        text = io.TextIOWrapper(file, encoding="utf-8", newline="")
        writer: csv.DictWriter | None = None
        for record in records:
            fields = csv_fields(record)
            if writer is None:  # every record of a run has the same fields
                writer = csv.DictWriter(text, fieldnames=list(fields))
                writer.writeheader()
            writer.writerow(fields)
            count += 1
        text.flush()
        text.detach()  # leave the file to atomic_write, which closes it

    atomic_write(path, write)
    return count


def thresholds_path(path: Path) -> Path:
    """Where the multi-label thresholds of ``path``'s predictions go: ``<output>.thresholds.json``."""
    return path.with_name(f"{path.name}.thresholds.json")


def write_thresholds(path: Path, thresholds: dict[str, float]) -> Path:
    """Write ``{"thresholds": {label: threshold}}`` beside the predictions ``path``; returns the file's path."""
    target = thresholds_path(path)
    atomic_write_text(target, json.dumps({"thresholds": thresholds}, indent=2) + "\n")
    return target
