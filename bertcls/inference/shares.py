"""Under DDP, each rank writes the records of its share of the rows; rank 0 merges the shares by row.

A share is a hidden JSON Lines file beside the output, in row order. The merge streams: it holds one record
per share at a time (``heapq.merge``), whatever the number of rows.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

from bertcls.atomic_files import atomic_write
from bertcls.errors import InputError
from bertcls.inference.output import json_line


def share_path(output: Path, rank: int) -> Path:
    return output.with_name(f".{output.name}.rank{rank}.jsonl")


def write_share(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write one rank's records (in row order) to its share, atomically."""

    def write(file: Any) -> None:
        for record in records:
            file.write(json_line(record))

    atomic_write(path, write)


def _read_share(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def records_by_row(shares: list[Path]) -> Iterator[list[dict[str, Any]]]:
    """The shares' records merged in row order, grouped by row (one record per rank that predicted the row)."""
    missing = [path for path in shares if not path.is_file()]
    if missing:
        raise InputError(
            f"{missing[0]} (another rank's share of the predictions) is not visible here. With several nodes, "
            "--predictions.output_file must be on a filesystem every node sees."
        )
    merged = heapq.merge(*(_read_share(path) for path in shares), key=itemgetter("row"))
    for _, records in itertools.groupby(merged, key=itemgetter("row")):
        yield list(records)


def remove_shares(shares: list[Path]) -> None:
    for path in shares:
        path.unlink(missing_ok=True)
