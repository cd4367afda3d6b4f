"""Read one split of a dataset (a local file or a Hugging Face dataset split) into a DataFrame.

Every reader returns the same thing: a ``pandas.DataFrame`` with the requested columns and a ``row``
column holding each example's 0-based position in the original source, so that any later error or
prediction can point back at the exact row.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from bertcls.data.conll import SKIPPED_LINES, SKIPPED_ROWS, read_conll
from bertcls.data.stdin import STDIN_NAME
from bertcls.data.utf8 import check_text_file, check_utf8_file
from bertcls.errors import DataError
from bertcls.paths import resolve_location

ROW_COLUMN = "row"

FILE_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "txt",  # TSV, or CoNLL for the token task (the task decides)
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".conll": "conll",
    ".iob": "conll",
    ".bio": "conll",
}
FORMATS = ("csv", "tsv", "jsonl", "parquet", "conll")
# Files that must be converted before they can be read, by suffix.
CONVERT_FIRST = {
    ".gz": "is gzip-compressed: decompress it (e.g. `gunzip -k {path}`) and use the decompressed file",
    ".zip": "is a ZIP archive: unzip it and use the data file inside",
    ".xlsx": "is an Excel workbook: save the sheet as CSV (in Excel: File > Save As > CSV UTF-8) and use that file",
    ".xls": "is an Excel workbook: save the sheet as CSV (in Excel: File > Save As > CSV UTF-8) and use that file",
}
# Separators other than the format's own, as they show in a first line read as one column ("text;label").
SEPARATORS = {"\t": "tabs", ";": "semicolons", "|": "vertical bars", ",": "commas"}
# What pandas' C parser says about broken CSV: its "row" counts lines from 0, header included.
UNCLOSED_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")
FIELD_COUNT = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
BAD_LINE = re.compile(r"Skipping line (\d+)")
WIDER_FIRST_ROW = "Length of header or names does not match length of data"  # pandas, with index_col=False


@dataclass(frozen=True)
class SplitSource:
    """Where one split comes from: a local file, or a split of a Hugging Face dataset."""

    location: str
    hub_split: str | None = None
    hub_config: str | None = None
    stdin: bool = False  # ``location`` is the JSON Lines copy of standard input's texts (``bertcls.data.stdin``)

    @property
    def is_hub(self) -> bool:
        return self.hub_split is not None

    def describe(self) -> str:
        if self.stdin:
            return STDIN_NAME
        if self.is_hub:
            config = f", config '{self.hub_config}'" if self.hub_config else ""
            return f"Hugging Face dataset '{self.location}'{config}, split '{self.hub_split}'"
        return self.location


def file_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in CONVERT_FIRST:
        raise DataError(f"{path}: {CONVERT_FIRST[suffix].format(path=path)}.")
    if suffix not in FILE_FORMATS:
        known = ", ".join(sorted(FILE_FORMATS))
        raise DataError(f"{path}: cannot tell the file format from the suffix '{suffix}'; use one of {known}.")
    return FILE_FORMATS[suffix]


def existing_file(path: str) -> str:
    """The resolved path of a data file (``pkg://`` allowed), or a ``DataError`` if there is none."""
    resolved = resolve_location(path)
    if Path(resolved).is_dir():
        raise DataError(
            f"{path}: is a folder, not a file. Give the data file inside it (e.g. {Path(path) / 'train.csv'}), or, "
            "for a dataset saved with datasets' save_to_disk, data.hub_dataset."
        )
    if not Path(resolved).is_file():
        raise DataError(f"{path}: file not found. Check the path in your data config.")
    return resolved


@dataclass(frozen=True)
class ReadOptions:
    """How local files are read: ``file_format`` overrides the suffix; ``column_names`` names headerless columns;
    ``text_columns`` are read as text even where they look like numbers ("007", "1e5")."""

    file_format: str | None = None
    txt_format: str = "tsv"
    column_names: tuple[str, ...] | None = None
    text_columns: tuple[str, ...] = ()
    skip_bad_lines: bool = False  # CSV/TSV lines with the wrong number of fields are skipped (and noted)
    # CSV only: another field separator than the comma (";" of spreadsheets in many locales). Out of the repr (which
    # cache keys hash): the data module adds it to a key only when set, so that other keys stay as they were.
    csv_delimiter: str | None = field(default=None, repr=False)


def read_file(path: str, options: ReadOptions = ReadOptions()) -> pd.DataFrame:
    """Read a CSV, TSV, JSON Lines, Parquet or CoNLL file into a DataFrame.

    CSV follows the usual quoting rules; TSV fields are taken literally (the GLUE convention: a quote
    character is text, not a delimiter). JSON values keep their JSON types (the string "01" stays a string).
    CoNLL files give one row per sentence with ``tokens`` and ``tags`` lists.
    """
    resolved = existing_file(path)
    fmt = options.file_format or file_format(resolved)
    if fmt == "txt":
        fmt = options.txt_format
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown data.file_format '{fmt}'; use one of {', '.join(FORMATS)}.")
    if fmt != "parquet":
        check_text_file(resolved, path)  # gzip, ZIP (xlsx) and UTF-16 files are named as such, not parsed
    try:
        if fmt in ("csv", "tsv"):
            separated: dict[str, Any] = {"sep": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
            if fmt == "csv" and options.csv_delimiter:
                separated["sep"] = options.csv_delimiter
            if options.column_names:  # a file without a header row
                separated |= {"header": None, "names": list(options.column_names)}
            text = {"dtype": dict.fromkeys(options.text_columns, str)}  # columns not in the file are ignored
            return read_separated(resolved, path, options.skip_bad_lines, **text, **separated)
        if fmt == "jsonl":
            return read_json_lines(resolved, path)
        if fmt == "conll":
            return read_conll(resolved, path, options.skip_bad_lines)
        return pd.read_parquet(resolved)
    except DataError:  # already names the file and the line (JSON Lines, CoNLL): not wrapped again
        raise
    except UnicodeDecodeError as error:
        check_utf8_file(resolved, path)  # raises, naming the line and byte offset
        raise DataError(f"{path}: not valid UTF-8 ({error}). Convert the file to UTF-8 (e.g. with iconv).") from error
    except (ValueError, pd.errors.ParserError) as error:
        raise parse_error(path, fmt, error, first_line(resolved)) from error


def read_separated(resolved: str, path: str, skip_bad_lines: bool, **options: Any) -> pd.DataFrame:
    """``pandas.read_csv``; with ``skip_bad_lines``, lines with the wrong number of fields are dropped, and their
    numbers kept in the frame's ``attrs[SKIPPED_LINES]`` (their data-row positions in ``attrs[SKIPPED_ROWS]``,
    exact where no quoted text before them spans several lines). Other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        frame = pd.read_csv(
            resolved,
            encoding="utf-8-sig",  # a byte-order mark (spreadsheet exports) is not glued to the first column name
            keep_default_na=False,
            na_values=[""],
            on_bad_lines="warn" if skip_bad_lines else "error",
            # Never the first column as an index: pandas does that silently when the first data row has one field
            # more than the header (an unquoted separator in a text), shifting every value of the file by one.
            index_col=False,
            **options,
        )
    lines = []
    for warning in caught:
        found = BAD_LINE.findall(str(warning.message))
        if str(warning.message).startswith(WIDER_FIRST_ROW):
            raise DataError(
                f"{path}: line 2 has more fields than the header (line 1) names columns: a text holding the "
                f'separator {options.get("sep", ",")!r} must be quoted ("like, this"), or set data.csv_delimiter.'
            )
        if found:
            lines += [int(line) for line in found]
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    header_lines = 0 if options.get("header", "infer") is None else 1
    if header_lines:
        check_header(resolved, path, options.get("sep", ","), options.get("quoting", csv.QUOTE_MINIMAL))
    frame.attrs[SKIPPED_LINES] = lines
    frame.attrs[SKIPPED_ROWS] = [line - 1 - header_lines for line in lines]
    return frame


def check_header(resolved: str, path: str, separator: str, quoting: int) -> None:
    """Refuse a header row that names a column twice: pandas would read the second as 'text.1', and a run would
    silently use the first. Empty names (trailing separators of spreadsheet exports) may repeat."""
    with open(resolved, encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle, delimiter=separator, quoting=quoting), [])
    positions: dict[str, list[int]] = {}
    for position, name in enumerate(header, start=1):
        if name.strip():
            positions.setdefault(name, []).append(position)
    repeated = [
        f"'{name}' (columns {', '.join(map(str, places))})" for name, places in positions.items() if len(places) > 1
    ]
    if repeated:
        raise DataError(
            f"{path}: the header (line 1) names more than one column {' and '.join(repeated)}, counted from 1. "
            "Give each column its own name in the file's first line."
        )


def first_line(resolved: str) -> str:
    """The file's first line (for messages about separators), empty where it cannot be read as text."""
    try:
        with open(resolved, encoding="utf-8-sig") as handle:
            return handle.readline()
    except (OSError, UnicodeDecodeError):
        return ""


def separator_hint(header: str) -> str:
    """Advice for a first line read as one column that holds another separator ("text;label"), else ""."""
    found = next((separator for separator in SEPARATORS if separator in header.rstrip("\r\n")), None)
    if found == "\t":
        return " Its first line holds tabs: a tab-separated file is read with data.file_format: tsv."
    if found == ",":
        return " Its first line holds commas: a comma-separated file is read with data.file_format: csv."
    if found:
        return (
            f" Its first line holds {SEPARATORS[found]}: the file looks '{found}'-separated (as spreadsheets save CSV "
            f"in many locales). Read it with data.csv_delimiter: '{found}' (and data.file_format: csv unless its name "
            "ends in .csv)."
        )
    return ""


def parse_error(path: str, fmt: str, error: Exception, header: str = "") -> DataError:
    """A ``DataError`` for a CSV/TSV/Parquet parser error, naming the line and the fix where pandas says which;
    ``header`` (the file's first line) shows a file separated by another character than the format's."""
    if isinstance(error, pd.errors.EmptyDataError):
        return DataError(f"{path}: holds no rows (the file is empty).")
    message = str(error)
    if unclosed := UNCLOSED_QUOTE.search(message):
        return DataError(
            f'{path}: line {int(unclosed[1]) + 1} opens a quoted field (") that is never closed, so the rest of the '
            'file ran into it. Close the quote; a quote inside a quoted text is written twice ("").'
        )
    if fields := FIELD_COUNT.search(message):
        expected, line, seen = fields.groups()
        if expected == "1" and (hint := separator_hint(header)):  # one header field: another separator
            return DataError(f"{path}: line {line} has {seen} fields where the first line has 1.{hint}")
        cause = (
            "A text holds a tab (TSV fields cannot), or a field is missing: fix that line"
            if fmt == "tsv"
            else 'Put a text that contains a comma in double quotes ("a, b"), or read a tab-separated file with '
            "data.file_format: tsv"
        )
        return DataError(
            f"{path}: line {line} has {seen} fields where {expected} are expected (the file's first line, or "
            f"data.column_names). {cause}; or set data.skip_invalid: true to skip such lines (they are counted in "
            "the log)."
        )
    return DataError(f"{path}: could not be parsed as {fmt.upper()}: {error}")


def read_json_lines(resolved: str, path: str) -> pd.DataFrame:
    """One JSON object per line; a line that is not one is reported by its number."""
    try:
        # A byte-order mark (Windows tools write one) is dropped, as for CSV and TSV.
        frame = pd.read_json(resolved, lines=True, dtype=False, convert_dates=False, encoding="utf-8-sig")
    except ValueError as error:
        with open(resolved, encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as line_error:
                    raise DataError(f"{path}: line {number} is not valid JSON ({line_error}).") from error
                if not isinstance(record, dict):
                    raise DataError(f'{path}: line {number} is not a JSON object ({{"text": ..., ...}}).') from error
        raise
    if frame.empty and frame.columns.empty:  # pandas reads an empty file as a frame without columns
        blank = " but for blank lines or empty objects {}" if os.path.getsize(resolved) else ""
        raise DataError(f"{path}: holds no rows (the file is empty{blank}).")
    return frame


def load_hub_split(source: SplitSource) -> datasets.Dataset:
    """One split of a Hugging Face dataset (a hub name or a local dataset folder)."""
    try:
        return datasets.load_dataset(source.location, source.hub_config, split=source.hub_split)
    except (ValueError, FileNotFoundError, ConnectionError) as error:
        raise DataError(
            f"{source.describe()}: {error} Check data.hub_dataset, data.hub_config and data.hub_splits (which maps "
            "train/validation/test to the dataset's split names); without network access the dataset must "
            "already be in the Hugging Face cache."
        ) from error


def hub_split_names(location: str, config: str | None) -> list[str] | None:
    """The split names of a Hugging Face dataset, or None where they cannot be listed (e.g. offline, not cached)."""
    try:
        return datasets.get_dataset_split_names(location, config)
    except Exception:  # any failure: loading the split itself reports the actual problem, with the fix
        return None


def source_fingerprint(source: SplitSource) -> str:
    """A string that changes whenever the source's content changes (used in cache keys)."""
    if source.is_hub:
        dataset = load_hub_split(source)
        return f"hub:{source.location}:{source.hub_config}:{source.hub_split}:{dataset._fingerprint}"
    return f"file:{file_sha256(existing_file(source.location))}"


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content. Hashed once per process while the file is unchanged (size and modification
    time): the CLI prepares the data before the model, and the data module's ``setup`` keys the same files again."""
    status = os.stat(path)
    return _content_sha256(str(Path(path).resolve()), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _content_sha256(path: str, size: int, modified_ns: int) -> str:
    """The SHA-256 of the file at ``path``, read in 1 MB blocks (``size`` and ``modified_ns`` key the cache)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_source(source: SplitSource, options: ReadOptions = ReadOptions()) -> pd.DataFrame:
    """All of ``source`` as a DataFrame, with a ``row`` column holding each row's position in the source."""
    if source.is_hub:
        frame = hub_frame(load_hub_split(source))
    else:  # the copy of standard input is JSON Lines whatever data.file_format says
        frame = read_file(source.location, ReadOptions() if source.stdin else options)
    dropped = frame.attrs.get(SKIPPED_ROWS, [])  # rows a reader skipped keep their numbers: later rows' stay right
    frame[ROW_COLUMN] = np.setdiff1d(np.arange(len(frame) + len(dropped)), dropped)
    return frame


def hub_frame(dataset: datasets.Dataset) -> pd.DataFrame:
    """The dataset as a DataFrame, with class-label ids (and lists of them, e.g. NER tags) turned into names.

    Negative ids (-1 marks unlabelled rows, e.g. GLUE test splits) become missing values.
    """
    frame = dataset.to_pandas()
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.ClassLabel):
            frame[name] = [feature.int2str(int(value)) if value >= 0 else None for value in frame[name]]
        elif isinstance(getattr(feature, "feature", None), datasets.ClassLabel):
            names = feature.feature.names
            frame[name] = [[names[int(value)] for value in values] for values in frame[name]]
    return frame


def select(
    frame: pd.DataFrame, source: SplitSource, columns: list[str], where: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Keep the rows of ``frame`` matching ``where`` (column -> value or list of values) and ``columns``."""
    wanted = list(dict.fromkeys([*columns, *(where or {})]))
    present = [str(column) for column in frame.columns if column != ROW_COLUMN]
    if not present:  # a dataset, or JSON Lines of empty objects ({}): nothing to select from
        raise DataError(f"{source.describe()}: has no columns (no rows, or only empty records).")
    missing = [column for column in wanted if column not in frame.columns]
    if filtered := [column for column in missing if column not in columns]:  # only data.where names them
        raise where_columns_missing(source, filtered, where or {}, present)
    if missing:
        hint = separator_hint(present[0]) if len(present) == 1 else ""
        raise DataError(
            f"{source.describe()}: column(s) {', '.join(repr(c) for c in missing)} not found. "
            f"Available columns: {', '.join(present)}. Set the column names in your data config "
            f"(e.g. data.text_column, data.label_column).{hint}"
        )
    for column, accepted in (where or {}).items():
        accepted_values = accepted if isinstance(accepted, list) else [accepted]
        frame = frame[frame[column].isin(accepted_values)]
    if frame.empty:
        if not where:
            raise DataError(f"{source.describe()}: holds no rows.")
        raise DataError(f"{source.describe()}: no rows left after the filter {where}. Check data.where.")
    return frame[[*columns, ROW_COLUMN]].reset_index(drop=True)


def where_columns_missing(
    source: SplitSource, missing: list[str], where: dict[str, Any], present: list[str]
) -> DataError:
    """The error for a ``data.where`` filter on columns the split lacks: often a filter that came with a config made
    for another file (the quickstart's ``where: {source: rotten_tomatoes}``) applied to a user's own file."""
    return DataError(
        f"{source.describe()}: data.where {where} filters on column(s) {', '.join(repr(c) for c in missing)}, which "
        f"it does not have (available columns: {', '.join(present)}). A data config made for another file "
        "(configs/data/rotten_tomatoes.yaml filters on 'source') brings its filter along: clear it with "
        "--data.where null (or `where: null` under data: in your config), or filter on one of the columns above."
    )
