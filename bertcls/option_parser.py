"""The command line's parser: no abbreviated options, and a "did you mean" for an option it does not know.

argparse (and jsonargparse) take any unambiguous prefix of an option for the option: ``--data.text_colum`` would
silently set ``data.text_column``, and a misspelling that happens to be a prefix goes unnoticed. bertcls' parsers
refuse abbreviations (``allow_abbrev=False``, see ``BertClsCLI.init_parser``); this parser then names the options
meant.
"""

from __future__ import annotations

import difflib
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

UNRECOGNIZED = "unrecognized arguments: "


class OptionParser(LightningArgumentParser):
    """``LightningArgumentParser`` whose "unrecognized arguments" error lists the options closest to each one."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if message.startswith(UNRECOGNIZED):
            parser = getattr(ex, "subcommand_parser", None) or self  # a subcommand's own options (fit's)
            message += suggestions(message[len(UNRECOGNIZED) :].split(), list(parser._option_string_actions))
        super().error(message, ex)


def suggestions(arguments: list[str], options: list[str]) -> str:
    """ " Did you mean ...?" for each unknown ``--option`` among ``arguments`` (its value ignored), or ""."""
    known = [option for option in options if option.startswith("--") and not option.endswith("+")]
    lines = []
    for argument in arguments:
        if not argument.startswith("--"):
            continue  # the value of an unknown option
        name = argument.split("=", 1)[0]
        section = name.rpartition(".")[0]  # --data.text_colum: the data section's options
        candidates = [option for option in known if option.rpartition(".")[0] == section]
        longer = sorted(option for option in candidates if option.startswith(name))  # an abbreviation of these
        matches = longer[:3] or difflib.get_close_matches(name, candidates, n=2, cutoff=0.8)
        if matches:
            lines.append(f"{name}: did you mean {' or '.join(matches)}?")
    if not lines:
        return ""
    return ". " + " ".join(lines) + " Options are never abbreviated: give their full names."
