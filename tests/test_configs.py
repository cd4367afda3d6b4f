"""Every YAML file under configs/ parses with the real CLI (``--print_config``; nothing is instantiated).

Full configs (configs/*.yaml, configs/benchmarks/*.yaml, configs/recipes/*.yaml) go through ``--config``;
part files (configs/<group>/*.yaml) through their group's flag (``GROUP_FLAGS``). Parts may name other parts
by relative path (a trainer file names its logger, callbacks and strategy files); the check follows those
references. New files are picked up by the glob.

Strategy files are also instantiated, as the CLI does before building the Trainer. Parsing never needs the
strategy's optional dependency (DeepSpeed is an extra that CI does not install): only instantiating a
DeepSpeed strategy does, and that one test skips, saying so, when ``deepspeed`` is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import yaml
from helpers import CONFIGS
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.strategies import Strategy

CONFIG_FILES = sorted(path for path in CONFIGS.rglob("*.yaml") if path.parent.name != "sweeps")  # W&B: test_sweeps
FULL_CONFIG_FOLDERS = {CONFIGS, CONFIGS / "benchmarks", CONFIGS / "recipes"}
GROUP_FLAGS = {
    "model": "--model",
    "data": "--data",
    "trainer": "--trainer",
    "logger": "--trainer.logger",
    "callbacks": "--trainer.callbacks",
    "strategy": "--trainer.strategy",
}
STRATEGY_FILES = sorted((CONFIGS / "strategy").glob("*.yaml"))


def config_id(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def expand_references(value: Any, folder: Path) -> Any:
    """Replace every ``*.yaml`` string naming an existing file (relative to ``folder``) by that file's content."""
    if isinstance(value, str) and value.endswith(".yaml"):
        part = folder / value
        assert part.is_file(), f"{value} (relative to {folder}) does not exist"
        return expand_references(yaml.safe_load(part.read_text()), part.parent)
    if isinstance(value, dict):
        return {key: expand_references(item, folder) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_references(item, folder) for item in value]
    return value


def assert_subset(expected: Any, actual: Any, where: str) -> None:
    """Every value given in ``expected`` (a config file) appears in ``actual`` (the resolved config)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} missing from the resolved config"
            assert_subset(value, actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for index, (value, resolved) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(value, resolved, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def print_config(cli, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    exit_ = cli("fit", *args, "--print_config")
    output = capsys.readouterr().out
    assert exit_ is not None and exit_.code in (0, None), f"parsing failed: {exit_}"
    resolved = yaml.safe_load(output)
    assert isinstance(resolved, dict) and {"model", "data", "trainer"} <= set(resolved)
    return resolved


def test_configs_are_found() -> None:
    groups = {path.parent.name for path in CONFIG_FILES if path.parent not in FULL_CONFIG_FOLDERS}
    assert groups == set(GROUP_FLAGS)
    assert {path.parent for path in CONFIG_FILES} >= FULL_CONFIG_FOLDERS


@pytest.mark.parametrize("path", CONFIG_FILES, ids=config_id)
def test_config_file_parses(path: Path, cli, capsys: pytest.CaptureFixture[str], run_dir: Path) -> None:
    content = yaml.safe_load(path.read_text())
    assert isinstance(content, dict | list) and content, f"{path} is empty"
    expected = expand_references(content, path.parent)
    if path.parent in FULL_CONFIG_FOLDERS:  # a full config composing part files
        resolved = print_config(cli, capsys, "--config", str(path))
        assert_subset(expected, resolved, path.name)
    else:
        group = path.parent.name
        resolved = print_config(cli, capsys, GROUP_FLAGS[group], str(path))
        section = resolved["trainer"] if GROUP_FLAGS[group].startswith("--trainer.") else resolved
        assert_subset(expected, section[group], group)


def test_recipes_and_strategies_are_found() -> None:
    names = {config_id(path) for path in CONFIG_FILES}
    assert {"recipes/bert-large-ddp.yaml", "recipes/bert-large-deepspeed.yaml", "trainer/gpu.yaml"} <= names
    assert {path.stem for path in STRATEGY_FILES} >= {
        "ddp",
        "deepspeed-zero2",
        "deepspeed-zero3",
        "deepspeed-zero3-offload",
        "fsdp",
    }


@pytest.mark.parametrize("path", STRATEGY_FILES, ids=config_id)
def test_strategy_file_instantiates(path: Path) -> None:
    """The file becomes the Strategy it names, through the same parser and instantiation as the CLI's."""
    class_path = yaml.safe_load(path.read_text())["class_path"]
    if "DeepSpeed" in class_path and importlib.util.find_spec("deepspeed") is None:
        pytest.skip(
            f"SKIPPED ON PURPOSE: {config_id(path)} parses without DeepSpeed (test_config_file_parses checks it), "
            "but building DeepSpeedStrategy needs the optional extra: pip install 'bertcls[deepspeed]'"
        )
    parser = LightningArgumentParser()
    parser.add_lightning_class_args(L.Trainer, "trainer")
    config = parser.parse_args(["--trainer.strategy", str(path)])
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    strategy = instantiate(config).trainer.strategy
    assert isinstance(strategy, Strategy), f"{path.name} was taken as {strategy!r}, not as a strategy spec"
    assert f"{type(strategy).__module__}.{type(strategy).__name__}".endswith(class_path.rsplit(".", 1)[-1])
