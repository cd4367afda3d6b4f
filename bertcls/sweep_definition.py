"""W&B sweep definitions (``configs/sweeps/*.yaml``, W&B's sweep configuration format): read, check, expand.

Expanding needs no W&B server: ``grid`` gives every combination of the parameters' values (the cartesian
product, in the order W&B lists it); ``random`` and ``bayes`` give seeded random draws (Bayesian search chooses
each run from the finished runs' results, which only the server has). Parameter forms (W&B's): ``value``;
``values`` with optional ``probabilities``; ``min``/``max`` with ``distribution`` ``uniform``,
``log_uniform_values``, ``int_uniform``, ``q_uniform`` or ``q_log_uniform_values`` (``q``: the step, default
1), or ``categorical`` with ``values``. Other forms are refused with a message that names the parameter and
the fix.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bertcls.errors import InputError

METHODS = ("grid", "random", "bayes")
GOALS = ("maximize", "minimize")
# The top-level keys of W&B's sweep configuration schema (the `sweeps` package's config/schema.json).
TOP_LEVEL_KEYS = {
    "apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
    "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters",
}  # fmt: skip
RANGE_DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform", "q_log_uniform_values")
SUPPORTED = ("value", "values (+ probabilities)", "categorical", *RANGE_DISTRIBUTIONS)
# How W&B reads the parameters of a run into the command: `${args}` gives `--name=value` items.
ARGS_MACROS = ("${args}", "${args_no_equals}")
PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")  # W&B's pattern for parameter names
SIGNIFICANT_DIGITS = 4  # continuous draws are rounded to this many significant digits (readable lines)


@dataclass(frozen=True)
class Parameter:
    """One swept option: ``kind`` is ``constant``, ``categorical`` or one of ``RANGE_DISTRIBUTIONS``."""

    name: str
    kind: str
    values: tuple[Any, ...] = ()
    probabilities: tuple[float, ...] | None = None
    low: float = 0.0
    high: float = 0.0
    q: float = 1


# --- reading and checking ------------------------------------------------------------------------------
def load_definition(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: no such sweep definition (see configs/sweeps/).")
    try:
        definition = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(definition, dict):
        raise InputError(f"{path}: a sweep definition is a YAML mapping (method, metric, parameters, command).")
    return definition


def check_definition(definition: dict[str, Any], where: str) -> dict[str, Parameter]:
    """Check the parts of a sweep definition that W&B and bertcls rely on; return its parameters, in order."""
    unknown = sorted(set(definition) - TOP_LEVEL_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown}; W&B's sweep configuration has {sorted(TOP_LEVEL_KEYS)}.")
    method = definition.get("method")
    if method not in METHODS:
        raise InputError(f"{where}: method is {method!r}; use one of {', '.join(METHODS)}.")
    metric = definition.get("metric")
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise InputError(f"{where}: give the metric to optimize: metric: {{name: val/accuracy, goal: maximize}}.")
    if metric.get("goal") not in GOALS:  # W&B would default to minimize: wrong for accuracy and F1
        raise InputError(f"{where}: metric.goal is {metric.get('goal')!r}; write goal: maximize (or minimize).")
    command = definition.get("command")
    if not isinstance(command, list) or not any(item in ARGS_MACROS for item in command):
        raise InputError(
            f"{where}: command must be a list ending in ${{args}}, which W&B expands to the run's --name=value "
            "options: [bertcls, fit, --config, <benchmark config>, ${args}]."
        )
    early = definition.get("early_terminate")
    if early is not None and (not isinstance(early, dict) or early.get("type") != "hyperband"):
        raise InputError(f"{where}: early_terminate: W&B knows only type: hyperband (with min_iter or max_iter, s).")
    run_cap = definition.get("run_cap")
    if run_cap is not None and (not isinstance(run_cap, int) or isinstance(run_cap, bool) or run_cap < 1):
        raise InputError(f"{where}: run_cap is {run_cap!r}; give a positive integer.")
    specs = definition.get("parameters")
    if not isinstance(specs, dict) or not specs:
        raise InputError(f"{where}: no parameters: give at least one, e.g. model.learning_rate: {{values: [...]}}.")
    parameters = {str(name): parse_parameter(str(name), spec) for name, spec in specs.items()}
    if method == "grid":
        for parameter in parameters.values():
            grid_values(parameter)  # raises for a parameter that grid search cannot enumerate
    return parameters


def parse_parameter(name: str, spec: Any) -> Parameter:
    """One entry of ``parameters``, in one of W&B's forms that ``sweep-lines`` can expand."""
    if not PARAMETER_NAME.fullmatch(name):
        raise InputError(f"parameter {name!r}: W&B parameter names are letters, digits, '_', '.' and '-'.")
    if not isinstance(spec, dict):
        raise InputError(f"parameter {name}: give a mapping, e.g. {{values: [16, 32]}} or {{value: 0.1}}.")
    if "parameters" in spec:
        raise InputError(
            f"parameter {name}: nested parameters are not supported; name each option in full with dots "
            f"({name}.<key>), as `bertcls fit --{name}.<key>` takes it."
        )
    distribution = spec.get("distribution")
    keys = set(spec) - {"distribution"}
    if "value" in spec:
        expect(name, keys, {"value"}, distribution, ("constant",))
        return Parameter(name, "constant", values=(spec["value"],))
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise InputError(f"parameter {name}: values must be a non-empty list.")
        if "probabilities" not in spec:
            expect(name, keys, {"values"}, distribution, ("categorical",))
            return Parameter(name, "categorical", values=tuple(values))
        if distribution == "categorical":
            raise InputError(
                f"parameter {name}: W&B calls values with probabilities 'categorical_w_probabilities': "
                "drop `distribution: categorical` (or write that name)."
            )
        expect(name, keys, {"values", "probabilities"}, distribution, ("categorical_w_probabilities",))
        return Parameter(name, "categorical", values=tuple(values), probabilities=probabilities(name, spec, values))
    if distribution is None and {"min", "max"} <= keys:  # W&B infers it from the bounds
        both_int = all(isinstance(spec[key], int) and not isinstance(spec[key], bool) for key in ("min", "max"))
        distribution = "int_uniform" if both_int else "uniform"
    if distribution not in RANGE_DISTRIBUTIONS:
        raise InputError(unsupported(name, distribution, spec))
    allowed = {"min", "max", "q"} if distribution.startswith("q_") else {"min", "max"}
    expect(name, keys, allowed, distribution, RANGE_DISTRIBUTIONS, required=frozenset({"min", "max"}))
    low, high = (number(name, spec, key) for key in ("min", "max"))
    step = number(name, spec, "q") if "q" in spec else 1
    if not low < high:
        raise InputError(f"parameter {name}: min ({low}) must be below max ({high}).")
    if distribution == "int_uniform" and not all(isinstance(spec[key], int) for key in ("min", "max")):
        raise InputError(f"parameter {name}: int_uniform takes integer bounds (min: 1, max: 4).")
    if "log" in distribution and low <= 0:
        raise InputError(f"parameter {name}: {distribution} needs min > 0 (it samples the logarithm).")
    if step <= 0:
        raise InputError(f"parameter {name}: q (the step) must be positive.")
    return Parameter(name, distribution, low=low, high=high, q=step)


def expect(
    name: str,
    keys: set[str],
    allowed: set[str],
    distribution: str | None,
    distributions: tuple[str, ...],
    required: frozenset[str] = frozenset(),
) -> None:
    if distribution is not None and distribution not in distributions:
        raise InputError(f"parameter {name}: distribution {distribution} does not go with {sorted(keys)}.")
    extra, missing = sorted(keys - allowed), sorted(required - keys)
    if extra or missing:
        problem = f"unexpected {extra}" if extra else f"missing {missing}"
        raise InputError(f"parameter {name}: {problem}; this form takes {sorted(allowed)} (W&B refuses other keys).")


def number(name: str, spec: dict[str, Any], key: str) -> float:
    value = spec[key]
    if isinstance(value, str):
        raise InputError(f"parameter {name}: {key} is the text {value!r}: YAML reads 1e-5 as a string; write 1.0e-5.")
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InputError(f"parameter {name}: {key} must be a number, not {value!r}.")
    return value


def probabilities(name: str, spec: dict[str, Any], values: list[Any]) -> tuple[float, ...]:
    weights = spec["probabilities"]
    if not isinstance(weights, list) or len(weights) != len(values):
        raise InputError(f"parameter {name}: give one probability per value ({len(values)}).")
    numbers = tuple(number(name, {"probabilities": weight}, "probabilities") for weight in weights)
    if any(weight < 0 for weight in numbers) or abs(sum(numbers) - 1) > 1e-6:
        raise InputError(
            f"parameter {name}: probabilities must be >= 0 and add up to 1 (they add up to {sum(numbers)})."
        )
    return numbers


def unsupported(name: str, distribution: Any, spec: dict[str, Any]) -> str:
    fixes = {
        "log_uniform": "log_uniform takes the natural logarithms of the bounds; use distribution: "
        "log_uniform_values with the values themselves (min: 1.0e-5, max: 1.0e-4)",
        "q_log_uniform": "use q_log_uniform_values, whose min and max are the values themselves",
        "inv_log_uniform": "use log_uniform_values, or list the values",
        "inv_log_uniform_values": "use log_uniform_values, or list the values",
    }
    if distribution is None:
        fix = f"give value, values, or min and max with a distribution (keys given: {sorted(spec)})"
    else:
        fix = fixes.get(str(distribution), "use uniform or log_uniform_values with min and max, or list the values")
    return (
        f"parameter {name}: distribution {distribution!r} is not supported by bertcls sweep-lines "
        f"(supported: {', '.join(SUPPORTED)}): {fix}."
    )


# --- expanding -----------------------------------------------------------------------------------------
def grid_values(parameter: Parameter) -> list[Any]:
    """The values grid search takes for a parameter, as W&B's grid search enumerates them."""
    if parameter.kind in ("constant", "categorical") and parameter.probabilities is None:
        return list(parameter.values)
    if parameter.kind == "int_uniform":
        return list(range(int(parameter.low), int(parameter.high) + 1))
    if parameter.kind == "q_uniform":  # W&B: numpy.arange(min, max, q), so max itself is left out
        steps = math.ceil((parameter.high - parameter.low) / parameter.q - 1e-9)
        return [quantized(parameter.low + index * parameter.q, parameter.q) for index in range(steps)]
    what = "values with probabilities" if parameter.probabilities else f"distribution {parameter.kind}"
    raise InputError(
        f"parameter {parameter.name}: grid search cannot enumerate {what}; list the values (values: [...]), "
        "or use method random or bayes."
    )


def sample(parameter: Parameter, rng: random.Random) -> Any:
    """One random draw, as W&B's random search makes it (continuous values rounded, see SIGNIFICANT_DIGITS)."""
    kind, low, high = parameter.kind, parameter.low, parameter.high
    if kind == "constant":
        return parameter.values[0]
    if kind == "categorical":
        return rng.choices(parameter.values, weights=parameter.probabilities)[0]
    if kind == "int_uniform":
        return rng.randint(int(low), int(high))
    if kind.startswith("q_"):
        draw = rng.uniform(low, high) if kind == "q_uniform" else math.exp(rng.uniform(math.log(low), math.log(high)))
        return quantized(round(draw / parameter.q) * parameter.q, parameter.q)  # W&B rounds to a multiple of q
    draw = rng.uniform(low, high) if kind == "uniform" else math.exp(rng.uniform(math.log(low), math.log(high)))
    return min(max(float(f"{draw:.{SIGNIFICANT_DIGITS}g}"), low), high)


def quantized(value: float, step: float) -> int | float:
    """A multiple of ``step`` without floating-point noise: an int where the step is one, as W&B returns it."""
    return round(value) if isinstance(step, int) else float(f"{value:.12g}")


def expand(parameters: dict[str, Parameter], method: str, count: int | None, seed: int) -> list[dict[str, Any]]:
    """The runs: one ``{name: value}`` per line."""
    names = list(parameters)
    if method == "grid":
        combinations = itertools.product(*(grid_values(parameters[name]) for name in names))
        runs = [dict(zip(names, values, strict=True)) for values in combinations]
        return runs[:count] if count is not None else runs
    rng = random.Random(seed)
    return [{name: sample(parameters[name], rng) for name in names} for _ in range(count or 0)]
