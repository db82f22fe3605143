"""Scorer processes: every scorer that parses answer text runs outside the caller's process.

The defence against hostile answers is that they never reach an evaluator as code: each answer must
pass an allow-list grammar before such a scorer sees it (`probe.grammar`, `probe.scorer_audit`).
What this module adds is defence in depth, and time limits:

- `IsolatedScorer(..., per_call=False)`: one persistent worker answers every call (reasoning-gym
  scorers that compare, or whose input passed a grammar; math-verify, whose signal-based timeouts
  need a main thread). It is confined (`probe.isolation`: network namespace, landlock, seccomp,
  rlimits) before it reads a request, and killed and restarted when a call runs past its limit.
- `per_call=True`: the worker is a fork server that never runs a scorer itself. Each call runs in a
  fresh child forked from it, confined again (its own landlock domain, seccomp, CPU limit, a
  writable directory of its own, removed after it), that exits after one answer; so one answer
  cannot poison the next (for scorers a recipe opted into although they evaluate code). The child
  writes to a pipe of its own, which only the fork server reads: it never holds the pipe to the
  caller.

The protocol (JSON lines over the worker's stdin/stdout) cannot be desynchronised: each request
carries a random id, the reply must carry it back and be the only thing the worker wrote; anything
else (a reply to another id, a second line, bytes between calls) fails the call, and the worker is
killed and restarted. Scored code's prints go to /dev/null. What no protocol can stop: code that
runs inside the process computing a verdict can fake that verdict (it can read the request id, and
a per-call child can read its own nonce). Only the grammar prevents that code from running; the
per-call mode confines the damage to the one call that ran it.

A PEP 578 audit hook in every process that scores refuses process creation, file writes and sockets
from Python, one more layer: its event list is bound into the hook, not a module global that scored
code could reset (issue 11), but any Python that runs can still get around an in-process hook.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from probe.isolation import LAYERS, Confinement, confine, describe
from probe.scorer_audit import create_dataset, decode_entry

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # so the child imports this same `probe`
_PASSED_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "PYTHONHASHSEED", "PYTHONPATH")  # nothing secret
_PER_CALL_MARGIN_SECONDS = 2.0  # the fork server enforces the call limit; the caller waits this much longer
_REPLY_KEYS = ({"id", "result"}, {"id", "error"}, {"id", "timeout"})
_ZYGOTE_LAYERS = ("not_dumpable", "rlimits", "network_namespace", "no_new_privs", "landlock")
_CHILD_LAYERS = ("rlimits", "no_new_privs", "landlock", "seccomp")  # a nested landlock domain of its own


class ScorerTimeout(Exception):
    """The scorer did not answer in time (a persistent worker was killed and will restart)."""


class ScorerCrashed(Exception):
    """The scorer raised, died, or answered out of protocol (the worker will restart if it was its fault)."""


class IsolatedScorer:
    """A confined, restartable scorer process; `call` is thread-safe and time-limited."""

    worker_code = "import sys; from probe.sandbox import worker_main; worker_main(sys.argv[1:])"

    def __init__(
        self,
        preload: tuple[str, ...],
        timeout_seconds: float,
        memory_mb: int,
        per_call: bool = False,
        startup_timeout_seconds: float = 180.0,
    ) -> None:
        self.preload = preload  # modules the worker imports before "ready" (not counted in call time)
        self.timeout_seconds = timeout_seconds
        self.memory_mb = memory_mb
        self.per_call = per_call
        self.startup_timeout_seconds = startup_timeout_seconds
        self.restarts = 0  # workers killed after a timeout, a crash or out-of-protocol output
        self.layers: list[str] = []  # confinement layers in force in the processes that score
        self._owner_pid = os.getpid()  # a forked copy must never kill the owner's worker
        self._process: subprocess.Popen | None = None
        self._temp_dir: str | None = None
        self._buffer = b""
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Picklable (e.g. a reward function sent to another process): the copy starts its own worker."""
        transient = ("_process", "_lock", "_buffer", "_temp_dir")
        return {key: value for key, value in self.__dict__.items() if key not in transient}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(
            state, _owner_pid=os.getpid(), _process=None, _temp_dir=None, _buffer=b"", _lock=threading.Lock()
        )

    def call(self, kind: str, **args: Any) -> Any:
        """Run handler `kind` on `args` in the worker; raise ScorerTimeout / ScorerCrashed."""
        with self._lock:
            self._ensure_started()
            if self._stray_output():  # left by an earlier call: that worker cannot be trusted
                self._restart()
                self._ensure_started()
            request_id = secrets.token_hex(16)
            limit = self.timeout_seconds + (_PER_CALL_MARGIN_SECONDS if self.per_call else 0.0)
            try:
                self._send({"id": request_id, "kind": kind, "args": args})
                reply = self._receive(time.monotonic() + limit, request_id)
            except (ScorerTimeout, ScorerCrashed, OSError) as error:
                self._restart()
                if isinstance(error, ScorerTimeout):
                    raise
                raise ScorerCrashed(str(error)) from None
            if "timeout" in reply:  # a per-call child ran past the limit; the fork server killed it
                raise ScorerTimeout(f"no answer within {self.timeout_seconds} s")
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
        self._temp_dir = tempfile.mkdtemp(prefix="leash-scorer-")
        settings = {
            "memory_mb": self.memory_mb,
            "temp_dir": self._temp_dir,
            "preload": list(self.preload),
            "per_call": self.per_call,
            "timeout_seconds": self.timeout_seconds,
        }
        env = {key: os.environ[key] for key in _PASSED_ENVIRONMENT if key in os.environ}
        env.update(
            HOME=self._temp_dir,
            TMPDIR=self._temp_dir,
            PYTHONDONTWRITEBYTECODE="1",
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")])),
        )
        command = [
            sys.executable,
            "-B",
            "-s",
            "-P",  # no cwd (the writable temp dir) on sys.path: nothing written there can shadow a module
            "-c",
            self.worker_code,
            json.dumps(settings),
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=self._temp_dir,
            close_fds=True,
            start_new_session=True,  # its own process group: killing it takes any child with it
        )
        self._buffer = b""
        try:
            ready = self._receive(time.monotonic() + self.startup_timeout_seconds, "ready")
        except (ScorerTimeout, ScorerCrashed) as error:
            self._kill()
            raise RuntimeError(f"scorer worker failed to start ({error}); preload={self.preload}") from None
        if "error" in ready:
            self._kill()
            raise RuntimeError(f"scorer worker failed to start: {ready['error']}")
        if ready["result"] != self.layers:
            self.layers = ready["result"]
            logger.info("scorer worker (%s): confinement %s", ",".join(self.preload), describe(self.layers))

    def _restart(self) -> None:
        self._kill()
        self.restarts += 1  # the next call starts a fresh worker

    def _kill(self) -> None:
        process, self._process = getattr(self, "_process", None), None
        if process is not None and os.getpid() == self._owner_pid:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait()
            for stream in (process.stdin, process.stdout):
                stream.close()
        temp_dir, self._temp_dir = getattr(self, "_temp_dir", None), None
        if temp_dir is not None and os.getpid() == self._owner_pid:
            shutil.rmtree(temp_dir, ignore_errors=True)

    def _send(self, message: dict) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps(message).encode() + b"\n")
        self._process.stdin.flush()

    def _stray_output(self) -> bool:
        """Whether the worker wrote anything (or closed its end) since the last reply."""
        assert self._process is not None and self._process.stdout is not None
        readable, _, _ = select.select([self._process.stdout.fileno()], [], [], 0)
        return bool(self._buffer or readable)

    def _receive(self, deadline: float, request_id: str) -> dict:
        """The reply to `request_id`: one JSON line, nothing after it, else ScorerCrashed."""
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
            reply = json.loads(line)
        except ValueError:
            raise ScorerCrashed("worker sent a malformed reply") from None
        if not isinstance(reply, dict) or reply.get("id") != request_id or set(reply) not in _REPLY_KEYS:
            raise ScorerCrashed("worker's reply does not answer this request (stray or forged output)")
        if self._stray_output():
            raise ScorerCrashed("worker wrote more than its reply")
        return reply


# --- the worker process


def worker_main(argv: list[str]) -> None:
    """Worker entry: preload, confine, then answer one JSON request per line until EOF."""
    settings = json.loads(argv[0])
    protocol_in = os.fdopen(os.dup(0), "rb")
    protocol_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # anything the scored code prints goes nowhere
    confinement = Confinement(temp_dir=settings["temp_dir"], memory_mb=settings["memory_mb"])
    try:
        for module in settings["preload"]:
            __import__(module)
        if settings["per_call"]:
            # A child inherits the fork server's namespace, dumpability and landlock domain, and adds
            # its own layers: measure once what every child will have.
            zygote = confine(_with_layers(confinement, _ZYGOTE_LAYERS))
            child = _call_in_child({"kind": "layers", "args": {}}, settings)
            if "result" not in child:
                raise RuntimeError(f"a per-call scorer child failed to start: {child}")
            layers = [layer for layer in (*LAYERS, "audit_hook") if layer in {*zygote, *child["result"]}]
        else:
            layers = confine(confinement)
            sys.addaudithook(_audit_hook())
            layers.append("audit_hook")
    except BaseException as error:  # report why startup failed instead of dying silently
        _write_line(protocol_out, {"id": "ready", "error": f"{type(error).__name__}: {error}"})
        return
    _write_line(protocol_out, {"id": "ready", "result": layers})
    for line in protocol_in:
        try:
            request = json.loads(line)
            request_id = request["id"]
        except (ValueError, KeyError, TypeError):
            return  # the caller never sends this: stop, and let it see the worker exit
        if settings["per_call"]:
            message = _call_in_child(request, settings)
        else:
            message = _call(request)
        _write_line(protocol_out, {"id": request_id, **message})


def _call(request: dict) -> dict:
    try:
        return {"result": _HANDLERS[request["kind"]](**request["args"])}
    except BaseException as error:  # noqa: B036 - scored code may raise anything, even SystemExit
        return {"error": f"{type(error).__name__}: {str(error)[:500]}"}


def _with_layers(confinement: Confinement, layers: tuple[str, ...], **changes: Any) -> Confinement:
    return Confinement(**{**confinement.__dict__, "layers": layers, **changes})


def _child_confinement(settings: dict, call_dir: str) -> Confinement:
    base = Confinement(temp_dir=call_dir, memory_mb=settings["memory_mb"])
    return _with_layers(base, _CHILD_LAYERS, cpu_seconds=math.ceil(settings["timeout_seconds"]) + 1)


def _call_in_child(request: dict, settings: dict) -> dict:
    """Run one request in a fresh confined child; only a well-formed reply with its nonce counts."""
    prepare = _PREPARE.get(request.get("kind"))
    if prepare is not None:
        try:
            prepare(**request["args"])  # trusted set-up (e.g. building the data set) before the fork
        except BaseException as error:  # noqa: B036 - reported like any scorer failure
            return {"error": f"{type(error).__name__}: {str(error)[:500]}"}
    nonce = secrets.token_hex(16)
    call_dir = tempfile.mkdtemp(dir=settings["temp_dir"])  # the only place this child may write
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(read_end)
            os.closerange(3, write_end)  # the fork server's protocol pipes among them
            os.closerange(write_end + 1, 1 << 16)
            os.chdir(call_dir)
            os.environ.update(HOME=call_dir, TMPDIR=call_dir)
            layers = confine(_child_confinement(settings, call_dir))
            sys.addaudithook(_audit_hook())
            if request.get("kind") == "layers":
                message = {"result": [*layers, "audit_hook"]}
            else:
                message = _call(request)
            _write_line(write_end, {**message, "nonce": nonce})
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + settings["timeout_seconds"]
    output, timed_out = _read_until_eof(read_end, deadline)
    os.close(read_end)
    _reap(pid, deadline if not timed_out else time.monotonic())
    shutil.rmtree(call_dir, ignore_errors=True)  # nothing one call wrote is there for the next
    if timed_out:
        return {"timeout": True}
    lines = output.split(b"\n")
    try:
        reply = json.loads(lines[0]) if len(lines) == 2 and lines[1] == b"" else None
    except ValueError:
        reply = None
    if (
        not isinstance(reply, dict)
        or reply.pop("nonce", None) != nonce
        or set(reply) not in ({"result"}, {"error"})
    ):
        return {"error": "per-call scorer wrote something other than one reply"}
    return reply


def _read_until_eof(descriptor: int, deadline: float) -> tuple[bytes, bool]:
    output = b""
    while len(output) <= 1 << 20:  # a reply is small; more is out of protocol anyway
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return output, True
        readable, _, _ = select.select([descriptor], [], [], remaining)
        if readable:
            chunk = os.read(descriptor, 1 << 16)
            if not chunk:
                return output, False
            output += chunk
    return output, False


def _reap(pid: int, deadline: float) -> None:
    """Wait for a child until `deadline`, then kill it."""
    while time.monotonic() < deadline:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.001)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def _write_line(descriptor: int, message: dict) -> None:
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write(descriptor, data) :]


_DENIED_EVENT_PREFIXES = (
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg",
    "subprocess.", "pty.", "socket.", "ctypes.", "shutil.", "os.remove", "os.rmdir", "os.rename", "os.mk",
    "os.chmod", "os.chown", "os.lchown", "os.truncate", "os.symlink", "os.link", "os.utime", "os.putenv",
    "os.unsetenv", "os.setxattr", "os.removexattr", "resource.setrlimit", "urllib.", "http.", "ftplib.",
    "smtplib.", "webbrowser.", "sqlite3.", "tempfile.", "mmap.", "sys.addaudithook",
)  # fmt: skip
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _audit_hook():
    """A hook refusing side effects; the event list is bound here, out of reach of module globals."""
    denied = tuple(_DENIED_EVENT_PREFIXES)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS
            )
            if writes:
                raise PermissionError(f"sandbox: writing files is not allowed ({path!r})")
        elif event.startswith(denied):
            raise PermissionError(f"sandbox: {event} is not allowed")

    return hook


# --- handlers (run in the worker or a per-call child only)


@functools.lru_cache(maxsize=64)
def _reasoning_gym_dataset(name: str, seed: int, size: int, kwargs_json: str):
    return create_dataset(name, seed, size, json.loads(kwargs_json))


def _dataset_of(fields: dict):
    key = (fields["dataset"], fields["seed"], fields["size"], json.dumps(fields["kwargs"], sort_keys=True))
    return _reasoning_gym_dataset(*key)


def _score_reasoning_gym(fields: dict, answer: str) -> float:
    """reasoning-gym's own score_answer on the entry the prompt was made from (carried in the fields).

    The data set object is rebuilt only for its scorer's configuration; entries are never
    regenerated here (reasoning-gym's generators depend on the hash seed).
    """
    return float(_dataset_of(fields).score_answer(answer=answer, entry=decode_entry(fields["entry"])))


@functools.lru_cache(maxsize=4096)
def _math_gold(gold: str, timeout_seconds: int) -> tuple:
    from math_verify import parse  # why: scorers run only in the worker (which preloads them)

    text = gold if ("$" in gold or "\\boxed" in gold) else f"${gold}$"
    return tuple(parse(text, fallback_mode="no_fallback", parsing_timeout=timeout_seconds))


@functools.lru_cache(maxsize=4096)
def _math_answer(answer: str, timeout_seconds: int) -> tuple:
    from math_verify import parse  # why: worker only, as above

    return tuple(parse("\\boxed{" + answer + "}", parsing_timeout=timeout_seconds))


def _math_many(gold: str, answers: list[str], timeout_seconds: int) -> dict:
    """math-verify of each answer against one gold, in one call (one round trip per problem), in the
    worker's main thread, where its signal-based timeouts work."""
    from math_verify import verify  # why: worker only, as above

    parsed_gold = list(_math_gold(gold, timeout_seconds))
    if not parsed_gold:
        return {"gold_ok": False, "answers": [{"answer": None, "correct": None} for _ in answers]}
    scored = []
    for answer in answers:
        predicted = list(_math_answer(answer, timeout_seconds))
        if not predicted:
            scored.append({"answer": None, "correct": False})
            continue
        correct = verify(parsed_gold, predicted, timeout_seconds=timeout_seconds)
        scored.append({"answer": str(predicted[0]), "correct": bool(correct)})
    return {"gold_ok": True, "answers": scored}


def _math_classes(representatives: list[str], answers: list[str], timeout_seconds: int) -> list[int]:
    """Equivalence classes under math-verify: for each answer in order, the index (into
    representatives + answers) of the first earlier representative it equals, else its own index
    (it becomes a representative). The representative is compared as math-verify's gold."""
    from math_verify import verify  # why: worker only, as above

    texts = [*representatives, *answers]
    parsed = [list(_math_answer(text, timeout_seconds)) for text in texts]
    heads = list(range(len(representatives)))
    classes = []
    for index in range(len(representatives), len(texts)):
        match = next(
            (h for h in heads if parsed[h] and parsed[index] and verify(parsed[h], parsed[index],
                                                                       timeout_seconds=timeout_seconds)),
            None,
        )  # fmt: skip
        if match is None:
            heads.append(index)
        classes.append(index if match is None else match)
    return classes


_HANDLERS = {
    "reasoning_gym": _score_reasoning_gym,
    "math_many": _math_many,
    "math_classes": _math_classes,
}
_PREPARE = {"reasoning_gym": lambda fields, answer: _dataset_of(fields)}
