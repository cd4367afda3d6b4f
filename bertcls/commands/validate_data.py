"""``bertcls validate-data``: check every data split of a run the way ``fit``, ``test`` and ``predict`` would.

It parses the same ``--config`` files and ``--section.key`` flags as ``bertcls fit``, reads each configured split
(train, validation, test, predict) and runs the up-front checks (``bertcls.data.validation``) on all of them, but
loads no model and tokenizes nothing: a large dataset is checked in the time it takes to read it. Every problem
of every split is listed, not only the first. Exit status 0 when the run would start, 1 when it would stop.
"""

from __future__ import annotations

import argparse

from jsonargparse import strip_meta

from bertcls.commands.run_config import parse_run_config
from bertcls.data.datamodule import ClassificationDataModule
from bertcls.data.validation import ROWS_NOTE, CheckedRows, found
from bertcls.errors import DataError, reported_as_exit


def main(argv: list[str]) -> None:
    with reported_as_exit():
        raise SystemExit(validate(argv))


def option_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertcls validate-data",
        description="Check the data of a run (every configured split) without training: files, columns, texts, "
        "labels, tag sequences. Takes every option of `bertcls fit` (--config files, --section.key flags).",
        allow_abbrev=False,  # an abbreviation must not swallow one of fit's options
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="check as a run with --data.skip_invalid true would: invalid rows are reported as skipped, and only a "
        "split that cannot be read, or has no valid row, fails",
    )
    return parser


def validate(argv: list[str]) -> int:
    """Print what each split holds and what is wrong with it; return the exit status."""
    options, rest = option_parser().parse_known_args(argv)
    config = parse_run_config(rest, "bertcls validate-data")
    data = strip_meta(config.data).as_dict()
    data["skip_invalid"] = skip = options.skip_invalid or bool(data.get("skip_invalid"))
    datamodule = ClassificationDataModule(**data)
    if not datamodule.sources:
        raise DataError("No data is configured: set data.train_file (or another split's file, or data.hub_dataset).")
    failed = 0
    for split, checked in datamodule.check_rows().items():
        where = datamodule.sources[split].describe()
        failed += not print_split(split, where, checked, skip)
    if datamodule.vocabulary is not None:
        print(f"labels: {', '.join(datamodule.vocabulary.names)}")
    if failed:
        fix = "" if skip else " Fix the rows listed, or drop them with --data.skip_invalid true (counted in the log)."
        print(f"{failed} of {len(datamodule.sources)} splits would stop a run.{fix}")
        return 1
    print("The data is ready" + (" (invalid rows would be skipped)." if skip else "."))
    return 0


def print_split(split: str, where: str, checked: CheckedRows | DataError, skip: bool) -> bool:
    """Print one split's report; return whether a run could use it."""
    if isinstance(checked, DataError):
        print(f"{split}: {checked}")
        return False
    frame, invalid = checked.frame, found(checked.invalid)
    bad = int(checked.invalid_mask.sum())
    status = "ok" if not bad else f"{bad} invalid ({ROWS_NOTE})" + (", skipped" if skip else "")
    print(f"{split}: {where}: {len(frame)} rows, {status}")
    for note in checked.notes + checked.skipped_lines_note(where):
        print(f"  note: {note}")
    for entry in invalid:
        print(f"  - {entry.count} with {entry.describe(frame)}: {entry.fix}.")
    return not bad or (skip and bad < len(frame))
