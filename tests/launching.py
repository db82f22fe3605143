"""`accelerate launch` of a training script on 2 CPU ranks, for tests that must not hang: a launch that
outlives its time limit is killed, every process of it, and fails the test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = ROOT / "configs" / "accelerate"
LAUNCH_TIMEOUT = 900  # s: a launch that takes longer is hung (each takes ~1 min on 2 busy cores)


def free_port() -> int:
    with socket.socket() as s:  # other runs on this machine may hold accelerate's default 29500
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: str, *args: str, script: tuple[str, ...] = ("-m", "train")) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file configs/accelerate/CONFIG script args`; a hung launch is killed
    (every process of it) and fails the test."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE / config),
        "--main_process_port", str(free_port()), *script, *args,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        # torchrun starts its workers in sessions of their own: kill the whole tree, not just the group
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(
            f"launch hung for {LAUNCH_TIMEOUT} s and was killed: {' '.join(command)}\n{stderr[-4000:]}"
        )
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
