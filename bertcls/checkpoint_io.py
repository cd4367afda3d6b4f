"""Checkpoint writing that a kill, a full disk or a shared filesystem cannot half-finish.

Lightning's own writer stages the file in the system temporary folder and then moves it. When that
folder is on another filesystem (``/tmp`` on the node, checkpoints on Lustre or NFS), the move is a copy,
and a job killed during the copy leaves a truncated ``last.ckpt``: the one file a resume needs.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bertcls.atomic_files import atomic_write


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that leaves the old file or the new one, never a mixture (see ``atomic_write``)."""
    atomic_write(path, lambda file: torch.save(payload, file))


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with :func:`atomic_torch_save` for local and network-mounted paths.

    Remote URLs (``s3://`` and the like) keep Lightning's writer: object stores replace whole objects.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)
