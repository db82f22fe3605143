"""Files that are whole or absent, and one process per output dir.

- `write_atomic`: a file is replaced in one step (written aside, fsynced, renamed); a failed write
  (a full disk) leaves no temporary file behind.
- Completeness manifests: a directory written by several steps (a training checkpoint, the final model)
  counts as complete only once `write_manifest` has listed its files and their sizes, last; a kill
  before that, or a file cut short afterwards, makes `read_manifest` answer None.
- `RunLock`: an output dir is used by one command at a time. `fcntl.flock` on OUT/.leash.lock, so the
  kernel releases it when the holder dies; the file names the holder (pid, host) for the refusal, and a
  file left by a process that no longer holds the lock is taken over with a warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

from probe.cli import InputError

logger = logging.getLogger(__name__)

LOCK_FILE = ".leash.lock"
TMP_MARK = ".tmp-"  # temporary files are named .NAME.tmp-PID


class LockHeld(InputError):
    """Another process holds the output dir's lock."""


class OutputDirError(InputError):
    """An output dir cannot be used (it is a file)."""


def check_output_dir(path: str | os.PathLike, what: str = "--output_dir") -> Path:
    """The output dir as a Path; OutputDirError when something that is not a directory is in its way."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise OutputDirError(f"{what} {path}: {parent} exists and is not a directory")
            break
    return path


# --- whole files


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the whole new one; on failure the
    temporary file is removed and the error raised."""
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the .NAME.tmp-PID files a killed writer left in `directory` (not recursive). Only for a
    directory this process holds the lock of: no other writer's temporary file can be in it."""
    stale = sorted(p for p in directory.glob(f".*{TMP_MARK}*") if p.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


# --- complete directories


def write_manifest(directory: Path, name: str, files: list[str] | None = None, **fields) -> None:
    """Mark `directory` complete: `name` (JSON) lists `files` (default: every other file under it) with
    their sizes in bytes, plus `fields`; written last and atomically, after every listed file is fsynced."""
    if files is None:
        files = [str(p.relative_to(directory)) for p in sorted(directory.rglob("*")) if p.is_file()]
    sizes = {}
    for relative in files:
        if relative == name:
            continue
        fd = os.open(directory / relative, os.O_RDONLY)
        try:
            os.fsync(fd)
            sizes[relative] = os.fstat(fd).st_size
        finally:
            os.close(fd)
    body = {**fields, "files": sizes}
    write_atomic(directory / name, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())


def read_manifest(directory: Path, name: str) -> dict | None:
    """The manifest when `directory` is complete: it parses and every file it lists is there with its
    size. None otherwise (never written, torn, or a listed file missing or cut short)."""
    try:
        body = json.loads((directory / name).read_text())
        files = body["files"]
        for relative, size in files.items():
            if (directory / relative).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return body


# --- one process per output dir


class RunLock:
    """Exclusive use of an output dir while a command runs: `with RunLock(out): ...`, or `acquire()` and
    `release()`. A second process gets LockHeld naming the holder's pid."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        check_output_dir(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise LockHeld(
                    f"{self.directory} is in use by pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')} (it holds {self.path}); wait for it to end, or stop it"
                ) from None
            # A holder that released between our open and our flock unlinked the file we hold: retry.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            os.close(fd)
        left = _holder(fd)
        if left:
            logger.warning(
                "%s: took over a stale lock of pid %s on %s, which died without releasing it",
                self.directory,
                left.get("pid", "?"),
                left.get("host", "?"),
            )
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # still held: nobody can take the file we remove
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> dict:
    """What a lock file says about its holder ({} when empty or unreadable)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}
