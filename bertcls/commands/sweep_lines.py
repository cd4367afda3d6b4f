"""``bertcls sweep-lines``: a W&B sweep definition as lines for ``slurm/sweep-array.sbatch``, without W&B.

A sweep definition (``configs/sweeps/*.yaml``, W&B's sweep configuration format) normally goes to the W&B
server, whose agents ask it for each run's parameters (``slurm/sweep-agent.sbatch``). Where compute nodes
cannot reach W&B, this command expands the definition on any machine instead, one line of ``--name value``
pairs per run, in the format of ``slurm/sweeps/lr.txt``:

- ``grid``: every combination of the parameters' values (the cartesian product, in the order W&B lists it);
- ``random``: ``--count`` draws (default: the definition's ``run_cap``), from a seeded generator;
- ``bayes``: the same random draws. Bayesian search chooses each run from the results of the finished ones,
  which only the W&B server has; offline there are none, so the lines are sampled at random, and say so.

The parameter forms it reads are listed in ``bertcls.sweep_definition``. ``early_terminate`` needs the server:
ignored.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from bertcls.errors import InputError, reported_as_exit
from bertcls.sweep_definition import check_definition, expand, load_definition


def main(argv: list[str]) -> None:
    with reported_as_exit():
        run(argv)


def option_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertcls sweep-lines",
        description="Expand a W&B sweep definition into lines of `--name value` pairs for "
        "slurm/sweep-array.sbatch (one array task per line), without the W&B server: grid gives every "
        "combination, random and bayes give --count seeded random draws (bayes needs the server's results, "
        "so offline it samples at random). See docs/sweeps.md.",
    )
    parser.add_argument("definition", type=Path, help="sweep definition, e.g. configs/sweeps/rte-minilm.yaml")
    parser.add_argument(
        "--count", type=int, help="random/bayes: number of lines (default: the definition's run_cap); grid: at most"
    )
    parser.add_argument("--seed", type=int, default=0, help="random/bayes: seed of the draws (default: 0)")
    parser.add_argument("--output", type=Path, help="write the lines to this file (default: standard output)")
    return parser


def run(argv: list[str]) -> list[str]:
    """Run the command; return the lines written (without the comment header)."""
    options = option_parser().parse_args(argv)
    definition = load_definition(options.definition)
    parameters = check_definition(definition, str(options.definition))
    if options.count is not None and options.count < 1:
        raise InputError(f"--count {options.count}: give a positive number of lines.")
    count = options.count if options.count is not None else definition.get("run_cap")
    method = definition["method"]
    if method != "grid" and count is None:
        raise InputError(
            f"{options.definition}: method {method} draws runs at random: give their number with --count N "
            "(or set run_cap in the definition)."
        )
    assignments = expand(parameters, method, count, options.seed)
    lines = [format_line(assignment) for assignment in assignments]
    text = "\n".join([*header(definition, options, len(lines)), *lines]) + "\n"
    if options.output is None:
        sys.stdout.write(text)
    else:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(text, encoding="utf-8")
        print(f"{options.output}: {len(lines)} lines ({method}); submit with --array=1-{len(lines)}", file=sys.stderr)
    for note in notes(definition):
        print(f"bertcls sweep-lines: note: {note}", file=sys.stderr)
    return lines


# --- writing -------------------------------------------------------------------------------------------
def format_value(value: Any) -> str:
    """A value as `bertcls fit` reads it on the command line (and sweep-array.sbatch splits the line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return shlex.quote(value)
    return shlex.quote(json.dumps(value))


def format_line(assignment: dict[str, Any]) -> str:
    return " ".join(f"--{name} {format_value(value)}" for name, value in assignment.items())


def fixed_arguments(definition: dict[str, Any]) -> list[str]:
    """The sweep command's own ``bertcls fit`` arguments (``--config ...``), without the W&B macros."""
    command = [str(item) for item in definition["command"]]
    start = command.index("fit") + 1 if "fit" in command else 0
    return [item for item in command[start:] if not (item.startswith("${") and item.endswith("}"))]


def header(definition: dict[str, Any], options: argparse.Namespace, lines: int) -> list[str]:
    method, metric = definition["method"], definition["metric"]
    how = "every combination of the values"
    if method == "grid" and (options.count is not None or "run_cap" in definition):
        how = f"the first {lines} combinations of the values (at most --count, or run_cap)"
    if method != "grid":
        how = f"{lines} random draws, seed {options.seed}"
    if method == "bayes":
        how += " (bayes needs the W&B server's results of finished runs: offline it samples at random)"
    command = ["bertcls", "sweep-lines", str(options.definition)]
    if options.count is not None:
        command += ["--count", str(options.count)]
    if method != "grid":
        command += ["--seed", str(options.seed)]
    if options.output is not None:
        command += ["--output", str(options.output)]
    best = "highest" if metric["goal"] == "maximize" else "lowest"
    target = options.output if options.output is not None else "<this file>"
    fixed = fixed_arguments(definition)
    # sweep-array.sbatch passes --trainer.accelerator $BERTCLS_ACCELERATOR (default gpu) after the config.
    cpu = "BERTCLS_ACCELERATOR=cpu " if runs_on_cpu(fixed) else ""
    gpus = " --gpus-per-node=0" if cpu else ""
    return [
        f"# {shlex.join(command)}",
        f"# method {method}: {how}.",
        f"# The best run has the {best} {metric['name']}.",
        "# Submit from the checkout's root, one array task per line:",
        f"#   {cpu}BERTCLS_SWEEP={target} sbatch{gpus} --array=1-{lines} slurm/sweep-array.sbatch {shlex.join(fixed)}",
    ]


def runs_on_cpu(arguments: list[str]) -> bool:
    """Whether the sweep's ``--config`` file sets ``trainer.accelerator: cpu`` (as the MiniLM benchmarks do)."""
    configs = [Path(value) for option, value in itertools.pairwise(arguments) if option == "--config"]
    for config in configs:
        try:
            content = yaml.safe_load(config.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        trainer = content.get("trainer") if isinstance(content, dict) else None
        if isinstance(trainer, dict) and trainer.get("accelerator") == "cpu":
            return True
    return False


def notes(definition: dict[str, Any]) -> list[str]:
    found = []
    if definition["method"] == "bayes":
        found.append("method bayes needs the W&B server (it models the finished runs): the lines are random draws.")
    if definition.get("early_terminate"):
        found.append("early_terminate (hyperband) needs the W&B server: every line runs to the end.")
    return found
