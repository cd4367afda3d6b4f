"""Checkpoint writing that a kill, a full disk or a shared filesystem cannot half-finish.

Lightning's own writer stages the file in the system temporary folder and then moves it. When that
folder is on another filesystem (``/tmp`` on the node, checkpoints on Lustre or NFS), the move is a copy,
and a job killed during the copy leaves a truncated ``last.ckpt``: the one file a resume needs.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bertcls.atomic_files import atomic_write
from bertcls.errors import InputError


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint file as a dict, loaded as data only (``weights_only``: tensors and plain values, never code).

    ``mmap`` leaves the tensors on disk until used (cheap for reading the small entries). A file that is not a
    readable checkpoint, or that holds other Python objects, raises an ``InputError`` naming it.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # not a torch file, truncated, or holding objects that unpickling would run
        refused = next((line.strip() for line in str(error).splitlines() if "GLOBAL" in line), None)
        if isinstance(error, pickle.UnpicklingError) and refused:
            raise InputError(
                f"{path} holds Python objects besides tensors and plain values ({refused}), and loading them could "
                "run code, so bertcls does not (torch.load with weights_only=True). Use a checkpoint written by "
                "bertcls fit, or re-save this one as a state dict of tensors."
            ) from error
        # torch's own text for a refused load advises weights_only=False: not repeated here.
        lines = str(error).strip().splitlines()
        torch_reason = isinstance(error, RuntimeError) and not isinstance(error, pickle.UnpicklingError) and lines
        reason = lines[0].rstrip(".") if torch_reason else "not in a checkpoint's format"
        raise InputError(
            f"{path} could not be read as a PyTorch checkpoint (truncated, or another kind of file): {reason}."
        ) from error
    if not isinstance(checkpoint, dict):
        raise InputError(f"{path} holds a {type(checkpoint).__name__}, not a Lightning checkpoint.")
    return checkpoint


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that leaves the old file or the new one, never a mixture (see ``atomic_write``)."""
    atomic_write(path, lambda file: torch.save(payload, file))


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with :func:`atomic_torch_save` for local and network-mounted paths.

    Remote URLs (``s3://`` and the like) keep Lightning's writer: object stores replace whole objects.
    """

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's loader, with ``weights_only`` on unless asked otherwise (Lightning turns it off for URLs)."""
        return super().load_checkpoint(path, map_location, weights_only=True if weights_only is None else weights_only)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)
