"""Reading W&B's offline run files in tests (wandb 0.31 has no Python reader for them any more)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768  # LevelDB log format: 32 KiB blocks of records with 7-byte headers
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path):
    """Records of a run-*.wandb file: LevelDB log format after a 7-byte file header (":W&B", magic,
    version). A record cut off by a kill is left out."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    position, pending = 7, b""
    while position + 7 <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < 7:  # trailer padding
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        payload = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0 and length == 0:
            continue
        if len(payload) < length:
            return  # torn by a kill mid-write
        pending += payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def history_rows(run_dir: Path, pattern: str = "wandb/offline-run-*/run-*.wandb") -> list[dict]:
    """Every W&B history row of every offline run under RUN matching `pattern`, as {key: value}, in
    the order `wandb sync` uploads them (a run's files by start time: their dirs' timestamps)."""
    rows = []
    for path in sorted(run_dir.glob(pattern)):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") != "history":
                continue
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                value = json.loads(item.value_json) if item.value_json else item.number or item.integer
                row[key] = value
            rows.append(row)
    return rows
