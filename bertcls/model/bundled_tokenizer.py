"""Keep the tokenizer inside every checkpoint, so that a checkpoint alone can evaluate and predict.

The encoder's architecture is in the checkpoint's hyperparameters and its weights in the state dict;
the tokenizer's files (``tokenizer.json`` and its config, under 1 MB for BERT) travel in the same file,
so the model folder or hub name used for training is not needed later.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

TOKENIZER_CHECKPOINT_KEY = "bertcls_tokenizer_files"


def tokenizer_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The tokenizer's saved files, by name."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {path.name: path.read_text(encoding="utf-8") for path in sorted(Path(folder).iterdir())}


def restore_bundled_tokenizer(checkpoint: Mapping[str, Any], cache_root: Path) -> Path | None:
    """Write the tokenizer kept in a checkpoint to ``cache_root/tokenizers/<hash>/``; None if it has none."""
    files: dict[str, str] | None = checkpoint.get(TOKENIZER_CHECKPOINT_KEY)
    if not files:
        return None
    digest = hashlib.sha256("".join(name + text for name, text in sorted(files.items())).encode()).hexdigest()
    folder = cache_root / "tokenizers" / digest[:32]
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=folder.parent))
        for name, text in files.items():
            (staging / name).write_text(text, encoding="utf-8")
        try:
            os.rename(staging, folder)  # atomic; a concurrent process may have won the race with the same files
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return folder
