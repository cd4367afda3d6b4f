"""``bertcls download``: fetch and check what a run needs while the hub is reachable, for offline compute nodes.

It parses the same ``--config`` files and ``--section.key`` flags as ``bertcls fit`` (without building the
model: that would load its weights), then:

1. model and tokenizer: hub names go into the Hugging Face cache (``snapshot_download``: config, safetensors
   weights, tokenizer files); local folders and ``pkg://`` paths are checked;
2. data: local files are checked and hashed; Hugging Face datasets are loaded (into ``HF_DATASETS_CACHE``);
3. with ``--tokenize`` (the default) the tokenization cache is built as ``fit`` builds it;
4. a JSON manifest records every artefact, the library versions and the environment a compute job needs,
   and the ``export`` lines are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError
from jsonargparse import Namespace, strip_meta

from bertcls.commands.run_config import parse_run_config
from bertcls.data.datamodule import ClassificationDataModule
from bertcls.data.sources import SplitSource, file_sha256, load_hub_split
from bertcls.errors import DataError, InputError, reported_as_exit
from bertcls.paths import PACKAGE_SCHEME, resolve_location
from bertcls.run_folder import logger_entries

MANIFEST_NAME = "offline-manifest.json"
# Top-level files only (no onnx/ or openvino/ exports); safetensors weights, not the .bin/.h5/.msgpack copies.
TOKENIZER_FILES = ["*.json", "*.txt", "*.model"]
MODEL_FILES = [*TOKENIZER_FILES, "*.safetensors"]
LEGACY_WEIGHTS = ["pytorch_model*.bin"]  # only for repositories without safetensors
SUBFOLDERS = ["*/*"]
DATA_FILE_OPTIONS = ("train_file", "validation_file", "test_file", "predict_file", "label_names_file")
OFFLINE_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
PASSED_ON = ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "BERTCLS_CACHE")
VERSIONS_OF = ("bertcls", "torch", "lightning", "transformers", "tokenizers", "datasets", "huggingface_hub")
OTHER_STAGES = {"validate": "validation", "test": "test", "predict": "predict"}  # stage -> the split it reads
COMMIT = re.compile(r"[0-9a-f]{40}")


def main(argv: list[str]) -> None:
    with reported_as_exit():  # bad input or no network: one message that says how to fix it
        download(argv)


def option_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertcls download",
        description="Download and check what a run needs (model, tokenizer, data), build its tokenization cache "
        "and write a manifest, so jobs on compute nodes without internet find everything. Also takes every "
        "option of `bertcls fit` (--config files, --section.key flags): see `bertcls fit --help`.",
        allow_abbrev=False,  # an abbreviation must not swallow one of fit's options
    )
    parser.add_argument("--revision", help="hub revision (branch, tag or commit) of the model (default: main)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="Hugging Face hub cache to download into (default: $HF_HUB_CACHE, or $HF_HOME/hub); "
        "the printed exports then set HF_HUB_CACHE to it",
    )
    parser.add_argument(
        "--tokenize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="build the tokenization cache as `bertcls fit` would (default: on)",
    )
    parser.add_argument("--manifest", type=Path, help=f"manifest path (default: <logger save_dir>/{MANIFEST_NAME})")
    return parser


def download(argv: list[str]) -> dict[str, Any]:
    """Run the command; return the manifest it wrote."""
    options, rest = option_parser().parse_known_args(argv)
    config = parse_run_config(rest, "bertcls download")
    if hub_constants.HF_HUB_OFFLINE:
        print("HF_HUB_OFFLINE is set: only the local Hugging Face cache is checked, nothing is downloaded.")
    artefacts = [
        local_file(f"data.{key}", getattr(config.data, key)) for key in DATA_FILE_OPTIONS if getattr(config.data, key)
    ]
    if config.ckpt_path:
        artefacts.append(local_file("ckpt_path", config.ckpt_path))
    model_name, tokenizer_name = config.model.model_name, config.data.tokenizer
    revision = getattr(config.model, "revision", None) or options.revision
    model = None
    if not config.model.encoder_config:  # else a checkpoint's config builds the encoder: its weights are not read
        model = fetch("model", "model.model_name", model_name, revision, options.cache_dir)
        artefacts.append(model)
    if model is not None and tokenizer_name == model_name:
        tokenizer = model | {"kind": "tokenizer", "option": "data.tokenizer"}
    else:
        tokenizer = fetch("tokenizer", "data.tokenizer", tokenizer_name, None, options.cache_dir)
    artefacts.append(tokenizer)

    data_args = strip_meta(config.data).as_dict()
    if tokenizer["source"] == "hub":  # the snapshot just fetched: same files, so the same cache keys as `fit`
        data_args["tokenizer"] = tokenizer["path"]
    datamodule = ClassificationDataModule(**data_args)
    artefacts += hub_datasets(datamodule.sources, implicit_splits=not config.data.hub_splits)
    tokenization = tokenize(datamodule) if options.tokenize else None

    manifest = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": ["bertcls", "download", *argv],
        "experiment": config.experiment,
        "artefacts": artefacts,
        "tokenization_cache": tokenization,
        "versions": versions(),
        "environment": environment(options.cache_dir),
    }
    path = options.manifest or default_manifest_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    report(manifest, path)
    if model is not None and model["source"] == "hub" and revision not in (None, "main"):
        print(
            f"Note: `fit` loads the main revision of '{model_name}'; to train on revision {revision}, "
            f"pass --model.model_name {model['path']}"
        )
    return manifest


# --- artefacts ---------------------------------------------------------------------------------
def artefact(kind: str, option: str, name: str, source: str, path: Path | None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": kind, "option": option, "name": name, "source": source}
    record["path"] = str(path) if path is not None else None
    if path is not None and path.is_dir():
        files = sorted(item for item in path.rglob("*") if item.is_file())
        record["files"] = [str(item.relative_to(path)) for item in files]
        record["size_bytes"] = sum(item.stat().st_size for item in files)
    elif path is not None:
        record["size_bytes"] = path.stat().st_size
    return record | extra


def local_file(option: str, name: str) -> dict[str, Any]:
    resolved = Path(resolve_location(name)).expanduser()
    if not resolved.is_file():
        absolute = resolved.resolve()
        where = f" ({absolute})" if str(absolute) != name else ""
        raise InputError(
            f"{option} '{name}': file not found{where}. Fix the path in your config, or pass --{option} PATH."
        )
    source = "package" if name.startswith(PACKAGE_SCHEME) else "local"
    return artefact("file", option, name, source, resolved.resolve(), sha256=file_sha256(resolved))


def fetch(kind: str, option: str, name: str, revision: str | None, cache_dir: Path | None) -> dict[str, Any]:
    """A model (or a tokenizer alone): check a local or packaged folder, or download a hub name's snapshot."""
    if name.startswith(PACKAGE_SCHEME):
        return artefact(kind, option, name, "package", Path(resolve_location(name)))
    path = Path(name).expanduser()
    if path.exists():
        if kind == "model" and not (path / "config.json").is_file():
            raise InputError(f"{option} '{name}': {path} has no config.json; give a folder written by save_pretrained.")
        return artefact(kind, option, name, "local", path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise InputError(
            f"{option} '{name}': no such folder. Fix the path, or give a Hugging Face hub name "
            "(e.g. bert-base-uncased)."
        )
    snapshot = hub_snapshot(option, name, revision, cache_dir, MODEL_FILES if kind == "model" else TOKENIZER_FILES)
    if kind == "model" and not any(snapshot.glob("*.safetensors")):
        snapshot = hub_snapshot(option, name, revision, cache_dir, LEGACY_WEIGHTS)
        if not any(snapshot.glob("pytorch_model*.bin")):
            raise InputError(f"{option} '{name}': the hub snapshot {snapshot} holds no weights (model.safetensors).")
    return artefact(kind, option, name, "hub", snapshot, revision=snapshot.name)  # snapshots/<commit sha>


def hub_snapshot(option: str, name: str, revision: str | None, cache_dir: Path | None, patterns: list[str]) -> Path:
    try:
        folder = snapshot_download(
            name, revision=revision, cache_dir=cache_dir, allow_patterns=patterns, ignore_patterns=SUBFOLDERS
        )
    except (OSError, ValueError) as error:
        raise InputError(f"{option} '{name}': {hub_problem(error, revision)}") from error
    return Path(folder)


def hub_problem(error: Exception, revision: str | None) -> str:
    if isinstance(error, GatedRepoError):
        return "the model is gated: accept its terms on huggingface.co, then `hf auth login` (or set HF_TOKEN)."
    if isinstance(error, RepositoryNotFoundError):
        return "no such model on the hub, nor a local folder: check the name (private models need `hf auth login`)."
    if isinstance(error, RevisionNotFoundError):
        return f"the hub has no revision '{revision}': check --revision."
    if isinstance(error, HFValidationError):
        return "neither an existing folder nor a valid hub name (name or namespace/name): check the name."
    fix = "Run `bertcls download` on a node with internet access (e.g. a login node); jobs then use the cached copy."
    if hub_constants.HF_HUB_OFFLINE:
        return f"not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it. {fix}"
    return f"could not be fetched from the Hugging Face hub ({error}). {fix}"


def hub_datasets(sources: dict[str, SplitSource], implicit_splits: bool) -> list[dict[str, Any]]:
    """The hub splits of the run. Without ``data.hub_splits``, train/validation/test are asked for by default,
    and a dataset may lack some: once one split has loaded (the dataset is reachable), a missing one is skipped.
    """
    records: list[dict[str, Any]] = []
    for split, source in sources.items():
        if source.is_hub:
            try:
                records.append(hub_dataset(split, source))
            except InputError:
                if not (implicit_splits and records):
                    raise
                print(f"{source.describe()}: not in the dataset, skipped.")
    return records


def hub_dataset(split: str, source: SplitSource) -> dict[str, Any]:
    """Load one split of ``data.hub_dataset`` as ``fit`` does, which caches it in ``HF_DATASETS_CACHE``."""
    try:
        dataset = load_hub_split(source)
    except DataError as error:
        raise InputError(
            f"data.hub_dataset: {error} To fetch it, run `bertcls download` on a node with internet access."
        ) from error
    local = Path(source.location).expanduser().exists()
    files = [Path(entry["filename"]) for entry in dataset.cache_files]
    folder = files[0].parent if files else None  # .../<dataset>/<config>/<version>/<commit sha for hub datasets>
    revision = folder.name if folder is not None and not local and COMMIT.fullmatch(folder.name) else None
    record = artefact("dataset", "data.hub_dataset", source.location, "local" if local else "hub", folder)
    record.pop("files", None)  # the folder holds every split: its size would count them all
    return record | {
        "hub_config": source.hub_config,
        "split": split,
        "hub_split": source.hub_split,
        "num_rows": dataset.num_rows,
        "size_bytes": sum(file.stat().st_size for file in files),
        "revision": revision,
    }


# --- tokenization cache, manifest ----------------------------------------------------------------
def tokenize(datamodule: ClassificationDataModule) -> dict[str, Any]:
    """Encode the splits ``fit`` reads (or, without training data, the splits the config has) into the cache.

    ``build_cache`` encodes exactly the splits ``setup`` of that stage would read.
    """
    sources = datamodule.sources
    stages = ["fit"] if "train" in sources else [stage for stage, split in OTHER_STAGES.items() if split in sources]
    root = datamodule.cache.root
    before = cache_entries(root)
    for stage in stages:
        datamodule.build_cache(stage)
    return {"path": str(root.resolve()), "stages": stages, "built": sorted(cache_entries(root) - before)}


def cache_entries(root: Path) -> set[str]:
    return {entry.name for entry in root.iterdir() if not entry.name.startswith(".")} if root.is_dir() else set()


def default_manifest_path(config: Namespace) -> Path:
    entries = logger_entries(config.trainer.logger)
    save_dir = getattr(entries[0].init_args, "save_dir", None) if entries else None
    return Path(save_dir or "checkpoints") / MANIFEST_NAME


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONS_OF:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def environment(cache_dir: Path | None) -> dict[str, str]:
    """What a compute job must set: offline mode, and the caches this command used if they are not the defaults."""
    variables = dict(OFFLINE_ENVIRONMENT)
    variables |= {name: os.environ[name] for name in PASSED_ON if os.environ.get(name)}
    if cache_dir is not None:
        variables["HF_HUB_CACHE"] = str(cache_dir.expanduser().resolve())
    return variables


def report(manifest: dict[str, Any], path: Path) -> None:
    for item in manifest["artefacts"]:
        revision = f" @ {item['revision'][:12]}" if item.get("revision") else ""
        print(f"{item['kind']:<9} {item['option']:<22} {item['name']} -> {item['path']}{revision}")
    cache = manifest["tokenization_cache"]
    if cache is not None:
        print(
            f"tokenized for {', '.join(cache['stages'])}: {len(cache['built'])} cache entries built in {cache['path']}"
        )
    print(f"Manifest: {path}\nSet these in the compute job (sbatch script) before `bertcls fit`:")
    for name, value in manifest["environment"].items():
        print(f"export {name}={shlex.quote(value)}")
