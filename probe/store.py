"""The on-disk formats of the probe, both ways: the probe dir (writers and readers), a training run's
probe points, and `probe ppl` output. Every other module reads and writes them through here.

Probe dir layout (see the design doc):

    OUT/config.json                    resolved config, written first (atomic)
    OUT/records/rank-00000.jsonl       one JSON line per finished problem, appended by that process,
                                       flushed and fsynced per line; a torn last line is ignored
    OUT/samples/p000123.jsonl.gz       one gzip shard per problem (its index in the probe set): one
                                       line per sample {sample, completion, length, token_entropy,
                                       finished, answer, correct, reason}; streamed chunk by chunk into a
                                       temporary file, renamed into place before the record is written
    OUT/problems.parquet               one row per problem, probe-set order, with its domain (rank 0)
    OUT/summary.json                   written last, atomically: its presence marks a finished dir

A problem counts as finished only when its record line is on disk, so a run killed at any point
(Ctrl-C, kill -9) restarts exactly the unfinished problems, and, sampling being seeded per problem,
rewrites them byte for byte (gzip with mtime 0, no file name).

A training run dir RUN holds one probe dir per probe point, RUN/probes/step-NNNNNN/ (`probe_dir`), and
`probe ppl` output dirs (OUT/ppl.parquet: problem_id, trace_index, ppl, num_tokens; OUT/ppl_summary.json)
may sit under RUN/ppl/*/. A study (`python -m train.study`) adds, per run, RUN/final_probes/step-NNNNNN/
(`final_probe_dir`: a checkpoint probed again at the end of the study, at the probe recipe's own budget).

Study dir layout (`study_run_dir`, `study_base_dir`):

    STUDY/base/probes/step-000000/         the base probed as the runs probe while training (copied into
                                           every run's probes/step-000000/: the same model, problems, seeds)
    STUDY/base/final_probes/step-000000/   the base at the final budget
    STUDY/runs/<entry>/seed-<s>/           one training run dir per entry and seed (its recipe.yaml first)
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from probe.cli import InputError
from probe.domains import default_domain, split_by_domain
from probe.files import read_manifest, remove_stale_temporaries, write_atomic
from probe.metrics import check_record, common_budget

CONFIG = "config.json"
RECORDS = "records"
SAMPLES = "samples"
PROBLEMS = "problems.parquet"
SUMMARY = "summary.json"
RUN_PROBES = "probes"  # RUN/probes/step-NNNNNN/
STEP_PREFIX = "step-"
RUN_FINAL_PROBES = "final_probes"  # RUN/final_probes/step-NNNNNN/ (a study's end-of-study probes)
STUDY_BASE = "base"  # STUDY/base/: the base model's probes, laid out as a run's
STUDY_RUNS = "runs"  # STUDY/runs/<entry>/seed-<s>/
SEED_PREFIX = "seed-"
RUN_PPL = "ppl"  # RUN/ppl/<name>/ppl.parquet
PPL_TABLE = "ppl.parquet"
PPL_SUMMARY = "ppl_summary.json"
# A training run dir's final model: written into RUN/.final-partial/, then moved into RUN, then listed in
# RUN/final_model.json (train.checkpoints); checkpoints are complete once checkpoint_complete.json is in.
FINAL_ASIDE = ".final-partial"
FINAL_MANIFEST = "final_model.json"
CHECKPOINT_MANIFEST = "checkpoint_complete.json"
CHECKPOINT_PREFIX = "checkpoint-"  # RUN/checkpoint-N (transformers' PREFIX_CHECKPOINT_DIR)
DEFAULT_ZETA = 0.05  # the spec's default; a probe dir's own config.probe.zeta wins


class ProbeDirError(InputError):
    """A probe dir (or run dir) cannot be used as asked; nothing was changed."""


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False)


def write_json(path: Path, obj) -> None:
    """An indented, key-sorted JSON file, written atomically."""
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_parquet(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_atomic(path, sink.getvalue().to_pybytes())


def read_json_lines(path: Path) -> tuple[list[dict], int]:
    """(records, byte length of the intact prefix). A torn last line (a kill mid-write: no newline, or
    not JSON) is left out; a bad line with whole lines after it is refused (ProbeDirError naming it),
    never cut: the lines after it are finished work."""
    data = path.read_bytes()
    records, good = [], 0
    lines = data.splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("no newline")
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("problem_id"), str):
                raise ValueError("not a record with a string problem_id")
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if number == len(lines):
                break  # torn by a kill mid-write
            raise ProbeDirError(
                f"{path}:{number}: not a record ({error}), with {len(lines) - number} line(s) after it; "
                "the file is damaged: repair or remove that line (nothing was changed)"
            ) from None
        records.append(record)
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
        """Drop the partial shard. Closing flushes what is buffered, which fails again on a full disk:
        the file is removed whatever closing raised."""
        try:
            with contextlib.suppress(OSError):
                self._text.close()
            with contextlib.suppress(OSError):
                self._raw.close()
        finally:
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

    def stored_config(self, overwrite: bool = False) -> dict | None:
        """config.json of the probe in this dir (None: none yet). An unreadable one is refused, unless
        `overwrite` (then it counts as another run's)."""
        path = self.root / CONFIG
        if not path.exists():
            return None
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(config, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            if overwrite:
                return {}
            raise ProbeDirError(
                f"{path}: unreadable ({error}); pass --overwrite to replace this probe dir"
            ) from None
        return config

    def check_config(self, config: Mapping, overwrite: bool) -> None:
        """Refuse (ProbeDirError) a directory holding a probe with another config, unless overwrite."""
        if self.root.exists() and not self.root.is_dir():
            raise ProbeDirError(f"output_dir {self.root} exists and is not a directory")
        old = self.stored_config(overwrite)
        if old is not None:
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
        """Rank 0: clear a replaced run (only when its config differs), remove the temporary files a
        killed or failed writer left, and write config.json."""
        same = self.stored_config(overwrite) == json.loads(dumps(config))
        if overwrite and not same:
            self.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / RECORDS).mkdir(exist_ok=True)
        (self.root / SAMPLES).mkdir(exist_ok=True)
        for directory in (self.root, self.root / SAMPLES):
            remove_stale_temporaries(directory)
        if not same:
            write_json(self.root / CONFIG, config)

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
        self.append_records([record])

    def append_records(self, records: Sequence[Mapping]) -> None:
        """Append records with one fsync (a problem group's records arrive together)."""
        with open(self.records_path, "a", encoding="utf-8") as handle:
            handle.write("".join(dumps(record) + "\n" for record in records))
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

    def last_write(self, rank: int, num_processes: int) -> float:
        """time.time() of process `rank`'s latest write (its records, or a shard it is streaming: problem
        i belongs to process i % num_processes); 0 when it wrote nothing yet."""
        paths = [self.root / RECORDS / f"rank-{rank:05d}.jsonl"]
        for partial in (self.root / SAMPLES).glob(".p*.jsonl.gz.tmp-*"):
            if int(partial.name[2:8]) % num_processes == rank:
                paths.append(partial)
        times = [0.0]
        for path in paths:
            try:
                times.append(path.stat().st_mtime)
            except FileNotFoundError:  # committed or discarded since the listing
                continue
        return max(times)

    # --- final files (rank 0)

    def write_problems(self, records: Sequence[Mapping], pass_columns: Mapping[str, np.ndarray]) -> None:
        """problems.parquet: one row per record, in the given order, plus pass@k columns."""
        table = pa.table(
            {
                "problem_id": pa.array([r["problem_id"] for r in records], pa.string()),
                "domain": pa.array([r.get("domain", "") for r in records], pa.string()),  # "": the task
                "prompt": pa.array([r["prompt"] for r in records], pa.string()),
                "fields": pa.array([dumps(r["fields"]) for r in records], pa.string()),
                "n": pa.array([r["n"] for r in records], pa.int64()),
                "c": pa.array([r["c"] for r in records], pa.int64()),
                "answers": pa.array([dumps(r["answers"]) for r in records], pa.string()),
                "token_entropy": pa.array([r["token_entropy"] for r in records], pa.float64()),
                "mean_length": pa.array([r["mean_length"] for r in records], pa.float64()),
                "unfinished": pa.array([r["unfinished"] for r in records], pa.int64()),
                "reasons": pa.array([dumps(r["reasons"]) for r in records], pa.string()),
                **{
                    name: pa.array(np.asarray(v, np.float64), pa.float64())
                    for name, v in pass_columns.items()
                },
            }
        )
        write_parquet(self.root / PROBLEMS, table)

    def write_summary(self, summary: Mapping) -> None:
        write_json(self.root / SUMMARY, summary)

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
    """problems.parquet rows with their JSON columns decoded (the records probe.metrics reads);
    `reasons` (reason -> samples) is absent from probe dirs written before it existed."""
    path = Path(probe_dir) / PROBLEMS
    if not path.is_file():
        raise ProbeDirError(
            f"{probe_dir}: no {PROBLEMS} (expected a probe dir written by `python -m probe run`)"
        )
    try:
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            for key in ("fields", "answers", "reasons"):
                if key in row:
                    row[key] = json.loads(row[key])
    except (OSError, ValueError, TypeError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise ProbeDirError(f"{path}: cannot read it ({error})") from None
    return rows


def is_finished(probe_dir: str | os.PathLike) -> bool:
    """Whether a probe dir is complete: summary.json is written last."""
    return (Path(probe_dir) / SUMMARY).is_file()


# --- reading finished probe dirs


@dataclasses.dataclass
class ProbeResult:
    """One finished probe dir: its summary.json and per-problem records (see probe.metrics)."""

    path: Path
    label: str
    summary: dict
    records: list[dict]  # one per problem, problems.parquet rows with `answers` decoded
    step: int | None = None  # training step when the dir came from RUN/probes/step-*/

    @property
    def n(self) -> int:
        return common_budget(self.records)

    @property
    def zeta(self) -> float:
        probe_config = (self.summary.get("config") or {}).get("probe") or {}
        return float(probe_config.get("zeta", DEFAULT_ZETA))

    @property
    def by_domain(self) -> dict[str, list[dict]]:
        """domain -> its records (a dir written before domains: one domain, named after its task)."""
        return split_by_domain(self.records, default_domain(str(self.summary.get("task") or "")))


def load_probe(path: str | os.PathLike, label: str | None = None, step: int | None = None) -> ProbeResult:
    """Read a finished probe dir; an empty or half-written one (no summary.json) is refused."""
    path = Path(path)
    if not path.is_dir():
        raise ProbeDirError(f"{path}: not a directory (expected a probe dir or a training run dir)")
    if not is_finished(path):
        raise ProbeDirError(
            f"{path}: no {SUMMARY}, so this probe dir is empty or half-written "
            f"(the probe writes {SUMMARY} last); finish it with `python -m probe run` first"
        )
    if not (path / PROBLEMS).is_file():
        raise ProbeDirError(f"{path}: {SUMMARY} present but {PROBLEMS} missing")
    try:
        summary = json.loads((path / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ProbeDirError(f"{path}/{SUMMARY}: cannot read it ({error})") from None
    _check_summary(path / SUMMARY, summary)
    try:
        rows = load_problems(path)
    except (KeyError, OSError, TypeError, ValueError) as error:
        raise ProbeDirError(f"{path}/{PROBLEMS}: cannot read it ({error})") from None
    if not rows:
        raise ProbeDirError(f"{path}: {PROBLEMS} holds no problems")
    missing = {"problem_id", "n", "c", "answers", "token_entropy"} - set(rows[0])
    if missing:
        raise ProbeDirError(f"{path}/{PROBLEMS}: missing columns {sorted(missing)}")
    try:
        for row in rows:
            check_record(row)
        common_budget(rows)
    except ValueError as error:
        raise ProbeDirError(f"{path}/{PROBLEMS}: {error}") from error
    return ProbeResult(path=path, label=label or path.name, summary=summary, records=rows, step=step)


# What readers take from summary.json, by type (every key optional: older dirs lack some).
SUMMARY_TYPES = {"task": str, "model": str, "temperature": (int, float), "top_p": (int, float), "n": int,
                 "metrics": dict, "config": dict}  # fmt: skip


def _check_summary(path: Path, summary) -> None:
    """ProbeDirError naming the first key of summary.json that a reader could not use."""
    if not isinstance(summary, dict):
        raise ProbeDirError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    for key, types in SUMMARY_TYPES.items():
        value = summary.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise ProbeDirError(f"{path}: {key} is {value!r}, not {_type_names(types)}")
    probe = (summary.get("config") or {}).get("probe")
    if probe is not None and not isinstance(probe, dict):
        raise ProbeDirError(f"{path}: config.probe is {probe!r}, not a JSON object")
    zeta = (probe or {}).get("zeta")
    number = isinstance(zeta, (int, float)) and not isinstance(zeta, bool)
    if zeta is not None and not (number and 0 < zeta < 1):
        raise ProbeDirError(f"{path}: config.probe.zeta is {zeta!r}, not a number in (0, 1)")


def _type_names(types) -> str:
    names = {str: "a string", int: "an integer", float: "a number", dict: "a JSON object"}
    return " or ".join(names[t] for t in (types if isinstance(types, tuple) else (types,)))


# --- a training run's probe points


def probe_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """RUN/probes/step-NNNNNN: where the probe of training step `step` is written."""
    return Path(run_dir) / RUN_PROBES / f"{STEP_PREFIX}{step:06d}"


def final_probe_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """RUN/final_probes/step-NNNNNN: where a study probes checkpoint `step` again at the final budget."""
    return Path(run_dir) / RUN_FINAL_PROBES / f"{STEP_PREFIX}{step:06d}"


def study_base_dir(study_dir: str | os.PathLike) -> Path:
    """STUDY/base: the base model's probes, at step 0 of probes/ and final_probes/."""
    return Path(study_dir) / STUDY_BASE


def study_noise_dir(study_dir: str | os.PathLike, sampling_seed: int) -> Path:
    """STUDY/base/noise_floor/sampling-seed-S: the base probed again at the final budget with another
    sampling seed (the study's base-vs-base control)."""
    return study_base_dir(study_dir) / "noise_floor" / f"sampling-seed-{sampling_seed}"


def study_run_dir(study_dir: str | os.PathLike, entry: str, seed: int) -> Path:
    """STUDY/runs/<entry>/seed-<s>: the training run dir of one entry and seed."""
    return Path(study_dir) / STUDY_RUNS / entry / f"{SEED_PREFIX}{seed}"


def run_probe_dirs(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, dir) for every RUN/probes/step-NNNNNN/ in step order."""
    found = []
    for child in (Path(run_dir) / RUN_PROBES).glob(f"{STEP_PREFIX}*"):
        suffix = child.name.removeprefix(STEP_PREFIX)
        if child.is_dir() and suffix.isdigit():
            found.append((int(suffix), child))
    return sorted(found)


def run_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, dir) of every RUN/checkpoint-N dir, complete or not, in step order."""
    found = []
    for child in Path(run_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = child.name.removeprefix(CHECKPOINT_PREFIX)
        if child.is_dir() and suffix.isdigit():
            found.append((int(suffix), child))
    return sorted(found)


def is_complete_checkpoint(checkpoint: Path) -> bool:
    """Complete once its manifest (written last, after every rank's files) lists whole files."""
    return read_manifest(checkpoint, CHECKPOINT_MANIFEST) is not None


def is_run_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / RUN_PROBES).is_dir() and not is_finished(path)


def load_run(run_dir: str | os.PathLike, skip_unfinished: bool = False) -> list[ProbeResult]:
    """A training run's probe points in step order, labelled RUN/step-S; an unfinished one is refused,
    or with `skip_unfinished` left out with a warning."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ProbeDirError(f"{run_dir}: not a directory")
    if not is_run_dir(run_dir):
        raise ProbeDirError(
            f"{run_dir}: not a training run dir (expected {run_dir}/{RUN_PROBES}/{STEP_PREFIX}NNNNNN/)"
        )
    probes = []
    for step, path in run_probe_dirs(run_dir):
        if skip_unfinished and not is_finished(path):
            warnings.warn(f"{path}: no {SUMMARY} (probe unfinished), left out", stacklevel=2)
            continue
        probes.append(load_probe(path, label=f"{run_dir.name}/{STEP_PREFIX}{step}", step=step))
    if not probes:
        raise ProbeDirError(f"{run_dir}: no finished probe dir under {run_dir}/{RUN_PROBES}/")
    return probes


# --- `probe ppl` output


def write_ppl(out: Path, rows: Sequence[Mapping], summary: Mapping) -> None:
    """OUT/ppl.parquet (one row per trace) and OUT/ppl_summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "problem_id": pa.array([r["problem_id"] for r in rows], pa.string()),
            "trace_index": pa.array([r["trace_index"] for r in rows], pa.int64()),
            "ppl": pa.array([r["ppl"] for r in rows], pa.float64()),
            "num_tokens": pa.array([r["num_tokens"] for r in rows], pa.int64()),
        }
    )
    write_parquet(out / PPL_TABLE, table)
    write_json(out / PPL_SUMMARY, summary)


def load_ppl(ppl_dir: str | os.PathLike) -> dict[str, float]:
    """problem_id -> mean perplexity over its traces, from a `probe ppl` output dir."""
    path = Path(ppl_dir) / PPL_TABLE
    if not path.is_file():
        raise ProbeDirError(f"{ppl_dir}: no {PPL_TABLE} (expected `python -m probe ppl` output)")
    table = pq.read_table(path)
    missing = {"problem_id", "ppl"} - set(table.column_names)
    if missing:
        raise ProbeDirError(f"{path}: missing columns {sorted(missing)}")
    per_problem: dict[str, list[float]] = {}
    for problem_id, ppl in zip(
        table.column("problem_id").to_pylist(), table.column("ppl").to_pylist(), strict=True
    ):
        per_problem.setdefault(problem_id, []).append(float(ppl))
    return {problem_id: float(np.mean(values)) for problem_id, values in per_problem.items()}


def run_ppl_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """`probe ppl` output dirs found under RUN/ppl/*/."""
    return sorted(p.parent for p in (Path(run_dir) / RUN_PPL).glob(f"*/{PPL_TABLE}"))
