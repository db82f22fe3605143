"""OS-level confinement of scorer processes: defence in depth, not the defence.

The defence is that model output never reaches an evaluator as code: answers pass a strict
allow-list grammar before any scorer that parses text (`probe.grammar`, `probe.scorer_audit`). The
layers here bound the damage if that ever fails (a scorer bug, a grammar mistake, a data set whose
scorer the recipe opted into running although it evaluates code). `confine` applies every layer
this machine supports to the calling process and returns the names of those in force; none of them
can be undone by the process afterwards:

- `network_namespace`: a fresh network namespace (only a loopback, and that down): no socket reaches
  another host or a local service. Root: unshare(CLONE_NEWNET); otherwise CLONE_NEWUSER|CLONE_NEWNET
  where the kernel allows unprivileged user namespaces.
- `landlock` (Linux >= 5.13, unprivileged): the file system is read-only, and only the Python
  installation, sys.path, the package and the system libraries are readable at all; the one
  writable directory is the caller's temp dir. From ABI 4 TCP bind/connect are refused too; from
  ABI 6 signals and abstract unix sockets cannot reach processes outside the sandbox.
- `seccomp` (x86_64, aarch64): no new processes (fork, vfork, execve, clone without CLONE_THREAD;
  clone3 answers ENOSYS so libc falls back to clone), no new session or process group (so killing
  the worker's group kills everything it runs), no signals but to itself, no ptrace or
  cross-process memory access, no namespaces or mounts, no io_uring, no sockets other than AF_UNIX.
- `rlimits`: address space, file size, open files, no core dumps; CPU seconds where asked; where
  seccomp is unavailable and we are not root, no new processes (RLIMIT_NPROC = 0).
- `no_new_privs`, `not_dumpable`: no privilege gain through exec; other processes of the same user
  cannot ptrace this one or read its /proc files (its pipes, its memory).

Dropping to an unprivileged uid is not a layer here: the interpreter must stay readable after the
drop for the lazy imports scorers do, and on machines where Python lives under /root it is not;
landlock + seccomp + the network namespace give the same guarantees without it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

LAYERS = ("network_namespace", "landlock", "seccomp", "rlimits", "no_new_privs", "not_dumpable")

_PR_SET_DUMPABLE = 4
_PR_SET_SECCOMP = 22
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_THREAD = 0x00010000
_AF_UNIX = 1


@dataclass(frozen=True)
class Confinement:
    """What a confined process may still do."""

    temp_dir: str  # the only writable directory (created and removed by the parent)
    memory_mb: int  # address-space limit
    cpu_seconds: int | None = None  # CPU-time limit (SIGKILL past it); None for long-lived workers
    file_mb: int = 64  # largest file it may write (in temp_dir)
    open_files: int = 256
    read_paths: tuple[str, ...] = field(default_factory=lambda: default_read_paths())
    layers: tuple[str, ...] = LAYERS  # which layers to apply (tests apply one at a time)


def default_read_paths() -> tuple[str, ...]:
    """The Python installation, sys.path, this package and the system libraries: all a scorer reads."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        package_root,
        *sys.path,
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/lib",
        "/lib64",
        "/etc/ld.so.cache",
        "/dev/null",
        "/dev/urandom",
    ]
    paths = []
    for path in candidates:
        if path and os.path.exists(path):
            real = os.path.realpath(path)
            if real not in paths:
                paths.append(real)
    return tuple(paths)


def confine(confinement: Confinement) -> list[str]:
    """Apply the requested layers this machine supports to the calling process; return those in force.

    Call it in a single-threaded process (user namespaces require it), after every import the
    process needs at start-up. Order matters: the namespace needs privileges that the later layers
    take away, and seccomp comes last because it forbids what the others use (unshare is allowed,
    but nothing may run after the filter that the filter would refuse).
    """
    wanted = set(confinement.layers)
    unknown = wanted - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown confinement layers: {sorted(unknown)}")
    libc = ctypes.CDLL(None, use_errno=True)
    applied = []
    if "not_dumpable" in wanted and libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
        applied.append("not_dumpable")
    if "rlimits" in wanted:
        _set_rlimits(confinement)
        applied.append("rlimits")
    if "network_namespace" in wanted and _new_network_namespace(libc):
        applied.append("network_namespace")
    needs_no_new_privs = wanted & {"no_new_privs", "landlock", "seccomp"}
    if needs_no_new_privs and libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        applied.append("no_new_privs")
    if "landlock" in wanted and "no_new_privs" in applied and _landlock(libc, confinement):
        applied.append("landlock")
    if "seccomp" in wanted and "no_new_privs" in applied and _seccomp(libc):
        applied.append("seccomp")
    elif "rlimits" in wanted and os.geteuid() != 0:
        # Without seccomp, RLIMIT_NPROC = 0 bounds processes (and threads: they count too). Root is
        # exempt from it, which is why seccomp is the layer that bounds a fork bomb there.
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    return applied


# --- rlimits


def _set_rlimits(confinement: Confinement) -> None:
    def cap(limit: int, value: int) -> None:
        _soft, hard = resource.getrlimit(limit)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(limit, (value, value))

    cap(resource.RLIMIT_AS, confinement.memory_mb << 20)
    cap(resource.RLIMIT_FSIZE, confinement.file_mb << 20)
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, confinement.open_files)
    if confinement.cpu_seconds is not None:
        cap(resource.RLIMIT_CPU, confinement.cpu_seconds)


# --- network namespace


def _new_network_namespace(libc) -> bool:
    flags = _CLONE_NEWNET if os.geteuid() == 0 else _CLONE_NEWUSER | _CLONE_NEWNET
    return libc.unshare(flags) == 0


# --- landlock (uapi: include/uapi/linux/landlock.h; syscalls 444-446 on every architecture)

_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_FS_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | (1 << 14) | (1 << 15)  # + truncate, ioctl
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is absent or disabled."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    version = libc.syscall(
        _SYS_LANDLOCK_CREATE_RULESET,
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
    )
    return max(0, int(version))


def _landlock(libc, confinement: Confinement) -> bool:
    abi = landlock_abi()
    if abi < 1:
        return False
    libc.syscall.restype = ctypes.c_long
    fs_rights = _FS_RIGHTS_BY_ABI[max(v for v in _FS_RIGHTS_BY_ABI if v <= abi)]
    # struct landlock_ruleset_attr { u64 handled_access_fs, handled_access_net, scoped }: pass the
    # prefix this ABI knows (the kernel rejects fields it does not).
    net_rights = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("<QQQ", fs_rights, net_rights, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    buffer = ctypes.create_string_buffer(attr[:size], size)
    ruleset = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, buffer, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    try:
        read = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
        rules = [(path, read) for path in confinement.read_paths] + [(confinement.temp_dir, fs_rights)]
        for path, rights in rules:
            if not _landlock_allow(libc, ruleset, path, rights):
                return False
        return libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0
    finally:
        os.close(ruleset)


def _landlock_allow(libc, ruleset: int, path: str, rights: int) -> bool:
    try:
        descriptor = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return True  # a path that vanished cannot be read anyway
    try:
        if not os.path.isdir(path):
            rights &= _FS_FILE_RIGHTS  # the kernel refuses directory rights on a file
        # struct landlock_path_beneath_attr { u64 allowed_access; s32 parent_fd; } __packed
        attr = ctypes.create_string_buffer(struct.pack("<Qi", rights, descriptor), 12)
        result = libc.syscall(
            _SYS_LANDLOCK_ADD_RULE,
            ctypes.c_int(ruleset),
            ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
            attr,
            ctypes.c_uint32(0),
        )
        return result == 0
    finally:
        os.close(descriptor)


# --- seccomp (classic BPF over struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; })

_SECCOMP_MODE_FILTER = 2
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_EPERM, _ENOSYS = 1, 38
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
# machine: (AUDIT_ARCH_*, syscall numbers, the x32 bit to refuse or None); numbers from the kernel's
# asm/unistd_64.h (x86_64) and asm-generic/unistd.h (aarch64)
_X86_64 = dict(fork=57, vfork=58, execve=59, execveat=322, clone=56, clone3=435, ptrace=101,
               process_vm_readv=310, process_vm_writev=311, io_uring_setup=425, socket=41, setsid=112,
               setpgid=109, unshare=272, setns=308, mount=165, kill=62, tkill=200, tgkill=234)  # fmt: skip
_AARCH64 = dict(execve=221, execveat=281, clone=220, clone3=435, ptrace=117, process_vm_readv=270,
                process_vm_writev=271, io_uring_setup=425, socket=198, setsid=157, setpgid=154, unshare=97,
                setns=268, mount=40, kill=129, tkill=130, tgkill=131)  # fmt: skip
_ARCHES = {"x86_64": (0xC000003E, _X86_64, 0x40000000), "aarch64": (0xC00000B7, _AARCH64, None)}
_DENIED_SYSCALLS = ("fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
                    "io_uring_setup", "setsid", "setpgid", "unshare", "setns", "mount")  # fmt: skip
_SELF_ONLY_SYSCALLS = ("kill", "tkill", "tgkill")  # a signal to itself only (arg 0: its pid / main thread)


def seccomp_program(machine: str, pid: int) -> list[tuple[int, int, int, int]] | None:
    """The filter for process `pid` as (code, jt, jf, k) instructions; None for an architecture we
    have no syscall table for."""
    if machine not in _ARCHES:
        return None
    arch, numbers, x32_bit = _ARCHES[machine]
    deny, allow = ("ret", _RET_ERRNO | _EPERM), ("ret", _RET_ALLOW)
    # Symbolic program first (labels resolved below): each check jumps to a named return.
    program: list = [("ld", 4), ("jne", arch, "kill"), ("ld", 0)]
    if x32_bit is not None:
        program.append(("jge", x32_bit, "deny"))
    program += [("jeq", numbers[name], "deny") for name in _DENIED_SYSCALLS if name in numbers]
    program += [("jeq", numbers[name], "self") for name in _SELF_ONLY_SYSCALLS]
    program += [("jeq", numbers["clone3"], "enosys"), ("jeq", numbers["clone"], "clone"),
                ("jeq", numbers["socket"], "socket"), allow]  # fmt: skip
    program += ["clone:", ("ld", 16), ("jset", _CLONE_THREAD, "allow"), deny]
    program += ["socket:", ("ld", 16), ("jeq", _AF_UNIX, "allow"), deny]
    program += ["self:", ("ld", 16), ("jeq", pid, "allow"), deny]
    program += ["deny:", deny, "allow:", allow, "enosys:", ("ret", _RET_ERRNO | _ENOSYS)]
    program += ["kill:", ("ret", _RET_KILL_PROCESS)]
    labels, position = {}, 0
    for item in program:
        if isinstance(item, str):
            labels[item[:-1]] = position
        else:
            position += 1
    code, position = [], 0
    for item in program:
        if isinstance(item, str):
            continue
        op, *rest = item
        if op == "ld":
            code.append((_BPF_LD_W_ABS, 0, 0, rest[0]))
        elif op == "ret":
            code.append((_BPF_RET_K, 0, 0, rest[0]))
        else:
            value, target = rest
            offset = labels[target] - position - 1
            if op == "jne":
                code.append((_BPF_JEQ_K, 0, offset, value))
            else:
                code.append(
                    ({"jeq": _BPF_JEQ_K, "jge": _BPF_JGE_K, "jset": _BPF_JSET_K}[op], offset, 0, value)
                )
        position += 1
    return code


def _seccomp(libc) -> bool:
    program = seccomp_program(platform.machine(), os.getpid())
    if program is None:
        return False
    # struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }; struct sock_fprog { u16 len; filter *; }
    filters = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *insn) for insn in program))

    class _SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = _SockFprog(len(program), ctypes.addressof(filters))
    return libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0


def describe(layers: Iterable[str]) -> str:
    """One line for logs: which layers are in force and which this machine lacks."""
    layers = list(layers)
    missing = [layer for layer in LAYERS if layer not in layers]
    return f"in force: {', '.join(layers) or 'none'}" + (
        f"; unavailable: {', '.join(missing)}" if missing else ""
    )
