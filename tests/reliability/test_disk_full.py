"""A full disk during `probe run` (issue 11, point 9): one line and exit status 1, finished records kept,
no temporary file left behind, and the rerun (with space again) writes the same files as a run that never
failed. Once with the disk filled by injection (every file the probe opens for writing shares a byte
budget, as a full file system does: what fits is written, then ENOSPC), once on a real 24 KiB tmpfs
mounted in a user and mount namespace (skipped where the machine allows neither)."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from tiny_lm import save_random
from train_runs import ROOT

from probe.__main__ import cli as probe_cli

REAL_OPEN = builtins.open
VARIABLE = ("seconds", "samples_per_second")  # wall-clock figures differ between runs


class FullDisk:
    """Files opened for writing (or appending) under `root`, and whose name passes `only`, share `space`
    bytes."""

    def __init__(self, root: Path, space: int, only=lambda path: True):
        self.root, self.space, self.only = Path(root).resolve(), space, only

    def open(self, file, mode="r", *args, **kwargs):
        writing = isinstance(file, (str, os.PathLike)) and ("w" in mode or "a" in mode)
        path = Path(file).resolve() if writing else None
        if path is None or self.root not in path.parents or not self.only(path):
            return REAL_OPEN(file, mode, *args, **kwargs)
        buffered = io.BufferedWriter(
            _Limited(REAL_OPEN(file, mode.replace("t", "").replace("b", "") + "b", 0), self)
        )
        if "b" in mode:
            return buffered
        return io.TextIOWrapper(
            buffered, encoding=kwargs.get("encoding") or "utf-8", newline=kwargs.get("newline")
        )


class _Limited(io.RawIOBase):
    def __init__(self, raw, disk: FullDisk):
        self.raw, self.disk = raw, disk

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.raw.fileno()

    def write(self, data) -> int:
        fits = min(len(data), self.disk.space)
        if not fits:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.raw.write(bytes(data[:fits]))
        self.disk.space -= fits
        return fits

    def close(self) -> None:
        self.raw.close()
        super().close()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_random(tmp_path_factory.mktemp("model") / "random")


def probe_args(model: Path, recipe: Path, out: Path) -> list[str]:
    return ["run", "--config", str(recipe), "--model", str(model), "--output_dir", str(out),
            "--n", "16", "--num_problems", "6", "--batch_size", "8", "--max_new_tokens", "8",
            "--progress", "false"]  # fmt: skip


@pytest.fixture(scope="module")
def whole(model, tiny_probe_recipe, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "probe"
    assert probe_cli(probe_args(model, tiny_probe_recipe, out)) == 0
    return out


def assert_same_probe(out: Path, whole: Path) -> None:
    shards = sorted(p.name for p in (whole / "samples").iterdir())
    assert sorted(p.name for p in (out / "samples").iterdir()) == shards
    for name in shards:
        assert (out / "samples" / name).read_bytes() == (whole / "samples" / name).read_bytes(), name
    assert pq.read_table(out / "problems.parquet").equals(pq.read_table(whole / "problems.parquet"))
    summaries = [json.loads((d / "summary.json").read_text()) for d in (out, whole)]
    assert [{k: v for k, v in s.items() if k not in VARIABLE} for s in summaries][0] == {
        k: v for k, v in summaries[1].items() if k not in VARIABLE
    }


def assert_failed_cleanly(err: str, out: Path) -> None:
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert lines[-1].startswith("probe run: failed: ") and "No space left on device" in lines[-1], err
    records = (out / "records" / "rank-00000.jsonl").read_bytes().splitlines(keepends=True)
    whole_lines = [line for line in records if line.endswith(b"\n")]
    assert whole_lines and all(json.loads(line)["problem_id"] for line in whole_lines)
    assert not list(out.rglob(".*.tmp-*")), sorted(out.rglob(".*.tmp-*"))


def test_a_disk_full_mid_probe_is_one_line_exit_1_and_the_rerun_is_identical(
    model, tiny_probe_recipe, whole, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "probe"
    # room for config.json and about three problems' shards and records
    three = sum((whole / "samples" / f"p{i:06d}.jsonl.gz").stat().st_size for i in range(3))
    disk = FullDisk(out, (whole / "config.json").stat().st_size + three + 900)
    monkeypatch.setattr(builtins, "open", disk.open)
    assert probe_cli(probe_args(model, tiny_probe_recipe, out)) == 1
    monkeypatch.undo()
    assert_failed_cleanly(capsys.readouterr().err, out)
    assert not (out / "summary.json").exists()
    assert probe_cli(probe_args(model, tiny_probe_recipe, out)) == 0
    assert_same_probe(out, whole)


def test_a_disk_full_at_the_final_merge_leaves_no_temporary_file(
    model, tiny_probe_recipe, whole, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "probe"
    disk = FullDisk(out, 0, only=lambda path: "problems.parquet" in path.name)
    monkeypatch.setattr(builtins, "open", disk.open)
    assert probe_cli(probe_args(model, tiny_probe_recipe, out)) == 1
    monkeypatch.undo()
    assert_failed_cleanly(capsys.readouterr().err, out)
    assert len((out / "records" / "rank-00000.jsonl").read_bytes().splitlines()) == 6  # all finished
    assert probe_cli(probe_args(model, tiny_probe_recipe, out)) == 0
    assert_same_probe(out, whole)


SCRIPT = """\
set -u
mount -t tmpfs -o size=24k tmpfs "$MNT"
"$PY" -m probe $ARGS 2> "$LOGS/first.err"; echo $? > "$LOGS/first.rc"
cp -a "$MNT/probe" "$LOGS/after-first"
mount -o remount,size=64m "$MNT"
"$PY" -m probe $ARGS 2> "$LOGS/second.err"; echo $? > "$LOGS/second.rc"
cp -a "$MNT/probe" "$LOGS/after-second"
"""


def test_a_real_full_tmpfs_mid_probe(model, tiny_probe_recipe, whole, tmp_path):
    if (
        not shutil.which("unshare")
        or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode
    ):
        pytest.skip("no user and mount namespaces here (unshare -rm): the injected full disk above stands in")
    mount, logs = tmp_path / "mnt", tmp_path / "logs"
    mount.mkdir()
    logs.mkdir()
    args = " ".join(probe_args(model, tiny_probe_recipe, mount / "probe"))
    env = dict(os.environ, MNT=str(mount), LOGS=str(logs), PY=sys.executable, ARGS=args, OMP_NUM_THREADS="1")
    done = subprocess.run(["unshare", "-rm", "bash", "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (logs / "first.rc").read_text().strip() == "1", (logs / "first.err").read_text()[-3000:]
    assert_failed_cleanly((logs / "first.err").read_text(), logs / "after-first")
    assert (logs / "second.rc").read_text().strip() == "0", (logs / "second.err").read_text()[-3000:]
    assert_same_probe(logs / "after-second", whole)
