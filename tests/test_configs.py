"""Every YAML file under configs/ parses with the real CLI (``--print_config``; nothing is instantiated).

Full configs (configs/*.yaml and configs/benchmarks/*.yaml) go through ``--config``; part files
(configs/<group>/*.yaml) through their group's flag (``GROUP_FLAGS``). Parts may name other parts by
relative path (a trainer file names its logger and callbacks files); the check follows those references.
New files are picked up by the glob.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import CONFIGS

CONFIG_FILES = sorted(CONFIGS.rglob("*.yaml"))
FULL_CONFIG_FOLDERS = {CONFIGS, CONFIGS / "benchmarks"}
GROUP_FLAGS = {
    "model": "--model",
    "data": "--data",
    "trainer": "--trainer",
    "logger": "--trainer.logger",
    "callbacks": "--trainer.callbacks",
}


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
