"""Read an offline W&B run back from its ``run-<id>.wandb`` file, with wandb's own protobuf records.

wandb 0.31 has no public reader for the transaction log any more (its writer and ``wandb sync`` live in the
Go ``wandb-core``). The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of chunks, each with a 7-byte header (CRC32, length, type), that join into serialized
``wandb_internal_pb2.Record`` messages. Only the framing is done here; the records are wandb's.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK_SIZE = 32 * 1024
FILE_HEADER = 7
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log (header {data[:7]!r})")
    position, pending = FILE_HEADER, b""
    while position + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER:  # the block's tail is padding
            position += left_in_block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[position : position + CHUNK_HEADER])
        if kind == 0:  # zero padding up to the block's end
            position += left_in_block
            continue
        chunk = data[position + CHUNK_HEADER : position + CHUNK_HEADER + length]
        if zlib.crc32(bytes([kind]) + chunk) != checksum:
            raise ValueError(f"{path}: corrupt chunk at byte {position}")
        position += CHUNK_HEADER + length
        pending += chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    """What one offline run folder (``offline-run-<time>-<id>``) holds."""

    folder: Path
    run_id: str = ""
    project: str = ""
    entity: str = ""
    display_name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Any] = field(default_factory=list)  # wandb_internal_pb2.ArtifactRecord
    preempting: bool = False  # the run said it was being preempted (``run.mark_preempting()``)

    def values(self, key: str) -> list[Any]:
        """Every logged value of a history key, in order."""
        return [row[key] for row in self.history if key in row]


def read_offline_run(folder: Path) -> OfflineRun:
    folder = Path(folder)
    (log,) = folder.glob("run-*.wandb")
    run = OfflineRun(folder)
    for record in read_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.project, run.entity = record.run.run_id, record.run.project, record.run.entity
            run.display_name, run.group, run.tags = record.run.display_name, record.run.run_group, list(record.run.tags)
            for item in record.run.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
        elif kind == "preempting":
            run.preempting = True
    return run


def offline_runs(root: Path) -> list[OfflineRun]:
    """Every offline run under ``root`` (any depth), oldest first."""
    return [read_offline_run(folder) for folder in sorted(Path(root).rglob("offline-run-*")) if folder.is_dir()]
