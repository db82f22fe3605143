"""A probe directory on disk: append-only per-problem records, sample shards, final tables.

Layout (see the design doc):

    OUT/config.json                    resolved config, written first (atomic)
    OUT/records/rank-00000.jsonl       one JSON line per finished problem, appended by that process,
                                       flushed and fsynced per line; a torn last line is ignored
    OUT/samples/p000123.jsonl.gz       one gzip shard per problem (its index in the probe set): one
                                       line per sample {sample, completion, length, token_entropy,
                                       finished, answer, correct}; streamed chunk by chunk into a
                                       temporary file, renamed into place before the record is written
    OUT/problems.parquet               one row per problem, probe-set order (written by rank 0)
    OUT/summary.json                   written last, atomically: its presence marks a finished dir

A problem counts as finished only when its record line is on disk, so a run killed at any point
(Ctrl-C, kill -9) restarts exactly the unfinished problems, and, sampling being seeded per problem,
rewrites them byte for byte (gzip with mtime 0, no file name).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CONFIG = "config.json"
RECORDS = "records"
SAMPLES = "samples"
PROBLEMS = "problems.parquet"
SUMMARY = "summary.json"


class ProbeDirError(RuntimeError):
    """The output directory cannot be used as asked; nothing was changed."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False)


def read_json_lines(path: Path) -> tuple[list[dict], int]:
    """(records, byte length of the intact prefix): a torn or unparsable last line is left out."""
    data = path.read_bytes()
    records, good = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # torn by a kill mid-write
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good += len(line)
    return records, good


class SampleShard:
    """Streams one problem's samples into a gzip file; `commit` moves it into place."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self._raw = open(self.tmp, "wb")
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0)
        self._text = io.TextIOWrapper(self._gzip, encoding="utf-8", newline="\n")
        self.count = 0
        # one encoder for every line (json.dumps with options builds a new one per call)
        self._encode = json.JSONEncoder(sort_keys=True, ensure_ascii=False, allow_nan=False).encode

    def write(self, rows: Iterable[Mapping]) -> None:
        lines = []
        for row in rows:
            lines.append(self._encode({"sample": self.count, **row}))
            self.count += 1
        if lines:
            self._text.write("\n".join(lines) + "\n")

    def commit(self) -> None:
        # Closing the text wrapper closes the gzip stream (trailer written, no sync-flush markers,
        # so the bytes depend only on the rows); GzipFile leaves the file itself open.
        self._text.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self._text.close()
        self._raw.close()
        self.tmp.unlink(missing_ok=True)


def read_samples(path: Path) -> list[dict]:
    """All sample lines of one shard."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


class ProbeStore:
    """One process's view of a probe directory."""

    def __init__(self, output_dir: str | os.PathLike, rank: int = 0):
        self.root = Path(output_dir)
        self.rank = rank
        self.records_path = self.root / RECORDS / f"rank-{rank:05d}.jsonl"

    # --- config

    def check_config(self, config: Mapping, overwrite: bool) -> None:
        """Refuse (ProbeDirError) a directory holding a probe with another config, unless overwrite."""
        path = self.root / CONFIG
        if self.root.exists() and not self.root.is_dir():
            raise ProbeDirError(f"output_dir {self.root} exists and is not a directory")
        if path.exists():
            old = json.loads(path.read_text())
            if old != json.loads(dumps(config)) and not overwrite:
                changed = sorted(_diff(old, json.loads(dumps(config))))
                raise ProbeDirError(
                    f"{self.root} holds a probe run with a different config (changed: {', '.join(changed)}); "
                    "use another --output_dir or pass --overwrite to replace it"
                )
        elif (
            any((self.root / name).exists() for name in (RECORDS, SAMPLES, PROBLEMS, SUMMARY))
            and not overwrite
        ):
            raise ProbeDirError(
                f"{self.root} holds probe files but no {CONFIG}; pass --overwrite to replace them"
            )

    def start(self, config: Mapping, overwrite: bool) -> None:
        """Rank 0: clear a replaced run (only when its config differs) and write config.json."""
        path = self.root / CONFIG
        same = path.exists() and json.loads(path.read_text()) == json.loads(dumps(config))
        if overwrite and not same:
            self.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / RECORDS).mkdir(exist_ok=True)
        (self.root / SAMPLES).mkdir(exist_ok=True)
        if not same:
            write_atomic(path, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())

    def clear(self) -> None:
        """Remove the files a probe run writes (and nothing else)."""
        for name in (SUMMARY, PROBLEMS, CONFIG):
            (self.root / name).unlink(missing_ok=True)
        for name in (RECORDS, SAMPLES):
            shutil.rmtree(self.root / name, ignore_errors=True)

    # --- records

    def finished(self) -> dict[str, dict]:
        """problem_id -> record, over every process's records file."""
        records: dict[str, dict] = {}
        for path in sorted((self.root / RECORDS).glob("rank-*.jsonl")):
            for record in read_json_lines(path)[0]:
                records[record["problem_id"]] = record
        return records

    def open_records(self) -> None:
        """Cut a torn last line off this process's records file, so appends start on a line."""
        self.records_path.parent.mkdir(parents=True, exist_ok=True)
        if self.records_path.exists():
            _, good = read_json_lines(self.records_path)
            if good != self.records_path.stat().st_size:
                with open(self.records_path, "r+b") as handle:
                    handle.truncate(good)
                    os.fsync(handle.fileno())

    def append_record(self, record: Mapping) -> None:
        with open(self.records_path, "a", encoding="utf-8") as handle:
            handle.write(dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def shard(self, problem_index: int) -> SampleShard:
        """A new shard for a problem; partial shards a killed run left for it are removed first."""
        path = self.samples_path(problem_index)
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        return SampleShard(path)

    def samples_path(self, problem_index: int) -> Path:
        return self.root / SAMPLES / f"p{problem_index:06d}.jsonl.gz"

    # --- final files (rank 0)

    def write_problems(self, records: Sequence[Mapping], pass_columns: Mapping[str, np.ndarray]) -> None:
        """problems.parquet: one row per record, in the given order, plus pass@k columns."""
        table = pa.table(
            {
                "problem_id": pa.array([r["problem_id"] for r in records], pa.string()),
                "prompt": pa.array([r["prompt"] for r in records], pa.string()),
                "fields": pa.array([dumps(r["fields"]) for r in records], pa.string()),
                "n": pa.array([r["n"] for r in records], pa.int64()),
                "c": pa.array([r["c"] for r in records], pa.int64()),
                "answers": pa.array([dumps(r["answers"]) for r in records], pa.string()),
                "token_entropy": pa.array([r["token_entropy"] for r in records], pa.float64()),
                "mean_length": pa.array([r["mean_length"] for r in records], pa.float64()),
                "unfinished": pa.array([r["unfinished"] for r in records], pa.int64()),
                **{
                    name: pa.array(np.asarray(v, np.float64), pa.float64())
                    for name, v in pass_columns.items()
                },
            }
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_atomic(self.root / PROBLEMS, sink.getvalue().to_pybytes())

    def write_summary(self, summary: Mapping) -> None:
        write_atomic(self.root / SUMMARY, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())

    def summary(self) -> dict | None:
        path = self.root / SUMMARY
        return json.loads(path.read_text()) if path.exists() else None


def _diff(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    keys = set(old) | set(new)
    changed = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


def load_problems(probe_dir: str | os.PathLike) -> list[dict]:
    """problems.parquet rows with fields/answers decoded (the records probe.metrics reads)."""
    rows = pq.read_table(Path(probe_dir) / PROBLEMS).to_pylist()
    for row in rows:
        row["fields"], row["answers"] = json.loads(row["fields"]), json.loads(row["answers"])
    return rows
