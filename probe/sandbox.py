"""Run scorers that may execute their input (reasoning-gym, math-verify) in an isolated worker process.

Some reasoning-gym scorers evaluate the answer text as Python (countdown's `score_answer` hands it to
sympy's `parse_expr`), and math-verify's own timeouts rely on signals, which only work on a main
thread. So model output never reaches those scorers in our process: `IsolatedScorer` keeps one
persistent child process (`python -c ...`, not multiprocessing, so the parent's `__main__` is never
re-imported) and talks to it in JSON lines over pipes, with a wall-clock limit per call; a call that
runs past it kills the child, which restarts on the next call.

Inside the child, before it reads any request:
- an audit hook (PEP 578) refuses process creation, file writes/removals, sockets, ctypes and
  rlimit changes (`PermissionError`), so `__import__('os').system('touch FILE')` does nothing;
- resource limits cap address space, file size and core dumps (and processes, where not root);
- its stdout is /dev/null (the protocol uses a private duplicate of the pipe), so printed text
  cannot corrupt replies.
Audit hooks are defence in depth, not a perfect sandbox (code that already runs in the child could
e.g. write to the protocol file descriptor); the main protection remains that only text passing a
task's own checks reaches a scorer, and that each call is time-limited and isolated.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # so the child imports this same `probe`
_DENIED_EVENT_PREFIXES = (
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "os.startfile",
    "subprocess.",
    "pty.",
    "socket.",
    "ctypes.",
    "shutil.",
    "os.remove",
    "os.rmdir",
    "os.rename",
    "os.mk",
    "os.chmod",
    "os.chown",
    "os.lchown",
    "os.chflags",
    "os.truncate",
    "os.symlink",
    "os.link",
    "os.utime",
    "os.putenv",
    "os.unsetenv",
    "os.setxattr",
    "os.removexattr",
    "resource.setrlimit",
    "urllib.",
    "http.",
    "ftplib.",
    "smtplib.",
    "webbrowser.",
    "sqlite3.",
    "tempfile.",
    "mmap.",
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class ScorerTimeout(Exception):
    """The worker did not answer in time (it was killed and will restart)."""


class ScorerCrashed(Exception):
    """The worker died or answered garbage (it will restart)."""


class IsolatedScorer:
    """One persistent, restartable scorer process; `call` is thread-safe and time-limited."""

    def __init__(
        self,
        preload: tuple[str, ...],
        timeout_seconds: float,
        memory_mb: int,
        startup_timeout_seconds: float = 180.0,
    ) -> None:
        self.preload = preload  # modules the child imports before "ready" (not counted in call time)
        self.timeout_seconds = timeout_seconds
        self.memory_mb = memory_mb
        self.startup_timeout_seconds = startup_timeout_seconds
        self.restarts = 0
        self._owner_pid = os.getpid()  # a forked copy must never kill the owner's worker
        self._process: subprocess.Popen | None = None
        self._buffer = b""
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Picklable (e.g. a reward function sent to another process): the copy starts its own worker."""
        return {
            key: value for key, value in self.__dict__.items() if key not in ("_process", "_lock", "_buffer")
        }

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(
            state, _owner_pid=os.getpid(), _process=None, _buffer=b"", _lock=threading.Lock()
        )

    def call(self, kind: str, **args: Any) -> dict:
        """Run handler `kind` in the child; raise ScorerTimeout / ScorerCrashed (child restarted lazily)."""
        with self._lock:
            self._ensure_started()
            try:
                self._send({"kind": kind, "args": args})
                reply = self._receive(time.monotonic() + self.timeout_seconds)
            except (ScorerTimeout, ScorerCrashed, OSError) as error:
                self._kill()
                self.restarts += 1  # the next call starts a fresh worker
                if isinstance(error, ScorerTimeout):
                    raise
                raise ScorerCrashed(str(error)) from None
            if "error" in reply:
                raise ScorerCrashed(reply["error"])
            return reply["result"]

    def close(self) -> None:
        with self._lock:
            self._kill()

    def __del__(self) -> None:
        try:
            self._kill()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down what _kill uses
            pass

    # --- process management

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._kill()
        self._owner_pid = os.getpid()
        env = dict(
            os.environ,
            PYTHONDONTWRITEBYTECODE="1",
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]),
        )
        command = [
            sys.executable,
            "-B",
            "-c",
            "import sys; from probe.sandbox import worker_main; worker_main(sys.argv[1:])",
            str(self.memory_mb),
            *self.preload,
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._buffer = b""
        try:
            ready = self._receive(time.monotonic() + self.startup_timeout_seconds)
        except (ScorerTimeout, ScorerCrashed) as error:
            self._kill()
            raise RuntimeError(f"scorer worker failed to start ({error}); preload={self.preload}") from None
        if "error" in ready:
            self._kill()
            raise RuntimeError(f"scorer worker failed to start: {ready['error']}")

    def _kill(self) -> None:
        process, self._process = getattr(self, "_process", None), None
        if process is not None and os.getpid() == self._owner_pid:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                stream.close()

    def _send(self, message: dict) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps(message).encode() + b"\n")
        self._process.stdin.flush()

    def _receive(self, deadline: float) -> dict:
        assert self._process is not None and self._process.stdout is not None
        descriptor = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ScorerTimeout(f"no answer within {self.timeout_seconds} s")
            readable, _, _ = select.select([descriptor], [], [], remaining)
            if readable:
                chunk = os.read(descriptor, 1 << 16)
                if not chunk:
                    raise ScorerCrashed(f"worker exited (code {self._process.poll()})")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise ScorerCrashed("worker sent a malformed reply") from None


# --- the child process


def worker_main(argv: list[str]) -> None:
    """Child entry: preload modules, lock down, then answer one JSON request per line until EOF."""
    protocol_in = os.fdopen(os.dup(0), "rb")
    protocol_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # anything the scored code prints goes nowhere
    memory_mb, *preload = argv

    def reply(message: dict) -> None:
        protocol_out.write(json.dumps(message).encode() + b"\n")
        protocol_out.flush()

    try:
        for module in preload:
            __import__(module)
        _limit_resources(int(memory_mb))
        sys.addaudithook(_deny_side_effects)
    except BaseException as error:  # report why startup failed instead of dying silently
        reply({"error": f"{type(error).__name__}: {error}"})
        return
    reply({"ready": True})
    for line in protocol_in:
        try:
            request = json.loads(line)
            reply({"result": _HANDLERS[request["kind"]](**request["args"])})
        except BaseException as error:  # noqa: B036 - scored code may raise anything, even SystemExit
            reply({"error": f"{type(error).__name__}: {str(error)[:500]}"})


def _limit_resources(memory_mb: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.geteuid() != 0:  # root ignores RLIMIT_NPROC; the audit hook covers that case
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def _deny_side_effects(event: str, args: tuple) -> None:
    if event == "open":
        _path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writes:
            raise PermissionError(f"sandbox: writing files is not allowed ({_path!r})")
    elif event.startswith(_DENIED_EVENT_PREFIXES):
        raise PermissionError(f"sandbox: {event} is not allowed")


# --- handlers (run in the child only)


@functools.lru_cache(maxsize=64)
def _reasoning_gym_dataset(name: str, seed: int, size: int, kwargs_json: str):
    # why: scorers run only in the worker child (which preloads them); the parent never imports them
    import reasoning_gym

    return reasoning_gym.create_dataset(name, seed=seed, size=size, **json.loads(kwargs_json))


@functools.lru_cache(maxsize=4096)
def _reasoning_gym_entry(name: str, seed: int, size: int, kwargs_json: str, index: int) -> dict:
    return _reasoning_gym_dataset(name, seed, size, kwargs_json)[index]


def _score_reasoning_gym(fields: dict, answer: str) -> float:
    """reasoning-gym's own score_answer on a regenerated entry (deterministic from the fields)."""
    key = (fields["dataset"], fields["seed"], fields["size"], json.dumps(fields["kwargs"], sort_keys=True))
    entry = _reasoning_gym_entry(*key, fields["index"])
    return float(_reasoning_gym_dataset(*key).score_answer(answer=answer, entry=entry))


@functools.lru_cache(maxsize=4096)
def _math_gold(gold: str, timeout_seconds: int) -> tuple:
    from math_verify import parse  # why: worker child only, as above

    text = gold if ("$" in gold or "\\boxed" in gold) else f"${gold}$"
    return tuple(parse(text, fallback_mode="no_fallback", parsing_timeout=timeout_seconds))


def _math_verify(gold: str, answer: str | None, timeout_seconds: int) -> dict:
    """math-verify in the child's main thread, where its signal-based timeouts work."""
    from math_verify import parse, verify  # why: worker child only, as above

    parsed_gold = list(_math_gold(gold, timeout_seconds))
    if not parsed_gold:
        return {"gold_ok": False, "answer": None, "correct": None}
    if answer is None:
        return {"gold_ok": True, "answer": None, "correct": False}
    predicted = parse("\\boxed{" + answer + "}", parsing_timeout=timeout_seconds)
    if not predicted:
        return {"gold_ok": True, "answer": None, "correct": False}
    correct = verify(parsed_gold, predicted, timeout_seconds=timeout_seconds)
    return {"gold_ok": True, "answer": str(predicted[0]), "correct": bool(correct)}


_HANDLERS = {"reasoning_gym": _score_reasoning_gym, "math": _math_verify}
