"""Specs for probe.isolation: each confinement layer, tested for real against the attack it stops.

Every attack runs in a fresh `python -c` process that confines itself with the named layers (as the
scorer worker does) and then attempts it; each is also run with no layer at all (the control), which
must succeed, so a test here cannot pass because the attack never worked. On a root machine each is
run again as an unprivileged user (fork after the imports, then setuid), to cover non-root machines.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from probe.isolation import LAYERS, landlock_abi, seccomp_program

ATTACK_SCRIPT = r"""
import json, os, socket, sys, threading, encodings.idna
from probe.isolation import Confinement, confine
spec = json.loads(sys.argv[1])
if spec["as_nobody"]:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
layers = tuple(spec["layers"])
applied = confine(Confinement(temp_dir=spec["temp_dir"], memory_mb=spec["memory_mb"], layers=layers))
outcome = "ok"
try:
    attack, target = spec["attack"], spec["target"]
    if attack == "write":
        open(target, "w").write("x")
    elif attack == "read":
        open(target).read()
    elif attack == "connect":
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        connection.settimeout(5)
        connection.connect(("127.0.0.1", int(target)))
        connection.sendall(b"reached")
    elif attack == "fork":
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    elif attack == "fork_bomb":
        children = 0
        try:
            for _ in range(10_000):
                if os.fork() == 0:
                    os._exit(0)
                children += 1
        finally:
            outcome = f"children={children}"
    elif attack == "shell":
        os.system(f"touch {target}")
    elif attack == "memory":
        block = bytearray(int(target) << 20)
    elif attack == "signal_parent":
        os.kill(os.getppid(), 0)
    elif attack == "signal_self":
        os.kill(os.getpid(), 0)
    elif attack == "thread":
        thread = threading.Thread(target=lambda: None)
        thread.start()
        thread.join()
except BaseException as error:
    outcome = outcome if outcome.startswith("children") else f"{type(error).__name__}: {error}"
print(json.dumps({"applied": applied, "outcome": outcome}))
"""

AS_NOBODY = [False, True] if os.geteuid() == 0 else [False]


def run_attack(attack, target, layers, temp_dir, as_nobody=False, memory_mb=512):
    spec = {"attack": attack, "target": str(target), "layers": list(layers), "temp_dir": str(temp_dir),
            "as_nobody": as_nobody, "memory_mb": memory_mb}  # fmt: skip
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", ATTACK_SCRIPT, json.dumps(spec)], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def dirs():
    """A temp dir the confined process may write, and an outside dir it must not (both world-writable
    and outside pytest's root-only base dir, so that only the layer under test stands in the way)."""
    base = Path(tempfile.mkdtemp(prefix="leash-isolation-"))
    inside, outside = base / "inside", base / "outside"
    for path in (base, inside, outside):
        path.mkdir(exist_ok=True)
        os.chmod(path, 0o777)
    yield inside, outside
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def listener():
    """A local TCP server; yields (port, received-bytes list)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(10)
    received = []

    def serve():
        try:
            while True:
                connection, _ = server.accept()
                received.append(connection.recv(64))
                connection.close()
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    server.close()


needs_landlock = pytest.mark.skipif(landlock_abi() < 1, reason="the kernel has no Landlock")
HAS_SECCOMP = seccomp_program(platform.machine(), 1) is not None
needs_seccomp = pytest.mark.skipif(not HAS_SECCOMP, reason="no seccomp table for this machine")


@needs_landlock
@pytest.mark.parametrize("as_nobody", AS_NOBODY)
def test_landlock_refuses_writes_and_reads_outside_but_allows_the_temp_dir(dirs, as_nobody):
    inside, outside = dirs
    secret = outside / "secret"
    secret.write_text("s")
    os.chmod(secret, 0o666)
    control = run_attack("write", outside / "control", [], inside, as_nobody)
    assert control["outcome"] == "ok" and (outside / "control").exists()
    assert run_attack("read", secret, [], inside, as_nobody)["outcome"] == "ok"

    confined = run_attack("write", outside / "F", ["landlock"], inside, as_nobody)
    assert "landlock" in confined["applied"] and "PermissionError" in confined["outcome"]
    assert not (outside / "F").exists()
    assert "PermissionError" in run_attack("read", secret, ["landlock"], inside, as_nobody)["outcome"]
    assert run_attack("write", inside / "ok", ["landlock"], inside, as_nobody)["outcome"] == "ok"
    assert (inside / "ok").exists()


@pytest.mark.parametrize("as_nobody", AS_NOBODY)
@pytest.mark.parametrize("layer", ["network_namespace", "landlock", "seccomp"])
def test_each_network_layer_refuses_a_local_tcp_connection(dirs, listener, layer, as_nobody):
    port, received = listener
    inside, _ = dirs
    assert run_attack("connect", port, [], inside, as_nobody)["outcome"] == "ok"  # the control reaches it
    reached = len(received)
    assert reached == 1
    if layer == "landlock" and landlock_abi() < 4:
        pytest.skip("Landlock ABI < 4 has no network rules")
    if layer == "seccomp" and not HAS_SECCOMP:
        pytest.skip("no seccomp table for this machine")
    result = run_attack("connect", port, [layer], inside, as_nobody)
    assert layer in result["applied"], result
    assert result["outcome"].startswith(("PermissionError", "OSError")), result
    assert len(received) == reached


@needs_seccomp
@pytest.mark.parametrize("as_nobody", AS_NOBODY)
def test_seccomp_allows_no_process_but_threads(dirs, as_nobody):
    inside, outside = dirs
    assert run_attack("fork", "", [], inside, as_nobody)["outcome"] == "ok"
    assert run_attack("shell", outside / "control", [], inside, as_nobody)["outcome"] == "ok"
    assert (outside / "control").exists()

    assert "PermissionError" in run_attack("fork", "", ["seccomp"], inside, as_nobody)["outcome"]
    assert run_attack("fork_bomb", "", ["seccomp"], inside, as_nobody)["outcome"] == "children=0"
    run_attack("shell", outside / "F", ["seccomp"], inside, as_nobody)
    assert not (outside / "F").exists()
    assert run_attack("thread", "", ["seccomp"], inside, as_nobody)["outcome"] == "ok"


@pytest.mark.parametrize("as_nobody", AS_NOBODY)
def test_rlimits_bound_memory(dirs, as_nobody):
    inside, _ = dirs
    assert run_attack("memory", 64, ["rlimits"], inside, as_nobody, memory_mb=512)["outcome"] == "ok"
    assert run_attack("memory", 2048, [], inside, as_nobody, memory_mb=512)["outcome"] == "ok"
    assert (
        "MemoryError" in run_attack("memory", 2048, ["rlimits"], inside, as_nobody, memory_mb=512)["outcome"]
    )
    if as_nobody:  # not root and no seccomp: RLIMIT_NPROC = 0 bounds processes
        assert run_attack("fork_bomb", "", ["rlimits"], inside, as_nobody)["outcome"] == "children=0"


@pytest.mark.parametrize("layer", ["landlock", "seccomp"])
def test_signals_reach_no_other_process(dirs, layer):
    inside, _ = dirs
    if layer == "landlock" and landlock_abi() < 6:
        pytest.skip("signal scoping needs Landlock ABI 6")
    if layer == "seccomp" and not HAS_SECCOMP:
        pytest.skip("no seccomp table for this machine")
    assert run_attack("signal_parent", "", [], inside)["outcome"] == "ok"
    assert "PermissionError" in run_attack("signal_parent", "", [layer], inside)["outcome"]
    assert run_attack("signal_self", "", [layer], inside)["outcome"] == "ok"


def test_every_layer_is_in_force_on_this_machine(dirs):
    """What this machine (kernel 6.x, x86_64) gives us; a machine without one says so in the worker log."""
    inside, _ = dirs
    applied = run_attack("fork", "", LAYERS, inside)["applied"]
    expected = {"rlimits", "no_new_privs", "not_dumpable", "network_namespace"}
    expected |= {"landlock"} if landlock_abi() >= 1 else set()
    expected |= {"seccomp"} if HAS_SECCOMP else set()
    assert set(applied) == expected


def test_seccomp_programs_are_well_formed():
    for machine in ("x86_64", "aarch64"):
        program = seccomp_program(machine, pid=4242)
        assert 10 < len(program) < 64
        for code, jt, jf, _k in program:
            assert 0 <= jt < 256 and 0 <= jf < 256 and code in (0x20, 0x15, 0x35, 0x45, 0x06)
        assert program[-1] == (0x06, 0, 0, 0x80000000)  # anything of another architecture: killed
    assert seccomp_program("riscv64", pid=4242) is None
