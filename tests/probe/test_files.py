"""probe.files: whole files, completeness manifests, the output-dir lock."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from probe.files import (
    LOCK_FILE,
    LockHeld,
    OutputDirError,
    RunLock,
    check_output_dir,
    read_manifest,
    remove_stale_temporaries,
    write_atomic,
    write_manifest,
)


def test_write_atomic_replaces_whole_and_leaves_nothing_behind_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "table.parquet"
    write_atomic(path, b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.parquet"]


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    for name in (".problems.parquet.tmp-123", ".summary.json.tmp-9", "problems.parquet", ".hidden"):
        (tmp_path / name).write_text("x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".problems.parquet.tmp-123", ".summary.json.tmp-9"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "problems.parquet"]


def test_a_manifest_is_void_once_a_listed_file_is_cut_short_or_gone(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"12345")
    (tmp_path / "sub" / "b.json").write_text("{}")
    write_manifest(tmp_path, "done.json", global_step=4)
    manifest = read_manifest(tmp_path, "done.json")
    assert manifest == {"global_step": 4, "files": {"a.bin": 5, "sub/b.json": 2}}
    (tmp_path / "a.bin").write_bytes(b"123")
    assert read_manifest(tmp_path, "done.json") is None
    (tmp_path / "a.bin").write_bytes(b"12345")
    (tmp_path / "sub" / "b.json").unlink()
    assert read_manifest(tmp_path, "done.json") is None
    (tmp_path / "done.json").write_text('{"files": {"a.bin": 5')  # torn
    assert read_manifest(tmp_path, "done.json") is None


def test_a_manifest_can_list_chosen_files_only(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"w")
    (tmp_path / "unrelated.txt").write_text("not part of it")
    write_manifest(tmp_path, "final.json", files=["model.safetensors"], global_step=2)
    assert read_manifest(tmp_path, "final.json")["files"] == {"model.safetensors": 1}


def test_an_output_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="exists and is not a directory"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(OutputDirError, match="exists and is not a directory"):
        check_output_dir(tmp_path / "file" / "below")
    assert check_output_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"


def test_the_lock_file_names_the_holder_and_goes_with_it(tmp_path):
    with RunLock(tmp_path) as lock:
        holder = json.loads(lock.path.read_text())
        assert holder["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_lock_held_by_another_process_is_refused_until_that_process_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from probe.files import RunLock; RunLock({str(tmp_path)!r}).acquire(); "
         "print('held', flush=True); import time; time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=rf"in use by pid {holder.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the kernel released it with the process; the file it left is taken over
        pass
