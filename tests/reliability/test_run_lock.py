"""One process per output dir (issue 11, point 7): `train` and `probe run` lock their output dir; a
second process gets one line naming the holder's pid and exit status 2; a lock left by a dead process
is taken over with a warning. Under several ranks the lock is the run's (rank 0 holds it)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tiny_lm import save_random
from train_runs import ROOT, train_args

from probe.__main__ import cli as probe_cli
from probe.files import LOCK_FILE, LockHeld, RunLock
from probe.store import is_complete_checkpoint, run_checkpoints
from train.grpo import cli as train_cli


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_random(tmp_path_factory.mktemp("model") / "random")


def probe_args(model: Path, recipe: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--config", str(recipe), "--model", str(model), "--output_dir", str(out),
            "--n", "2", "--max_new_tokens", "8", "--progress", "false", *extra]  # fmt: skip


def error_line(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.strip().splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    return errors[0]


def test_a_lock_is_exclusive_and_names_its_holder(tmp_path):
    with RunLock(tmp_path / "out"):
        with pytest.raises(LockHeld, match=rf"pid {os.getpid()}\b"):
            RunLock(tmp_path / "out").acquire()
    with RunLock(tmp_path / "out"):  # released on exit: taken again
        pass


def test_a_second_probe_into_a_locked_dir_is_refused_naming_the_pid(
    model, tiny_probe_recipe, tmp_path, capsys
):
    out = tmp_path / "probe"
    with RunLock(out):
        assert probe_cli(probe_args(model, tiny_probe_recipe, out)) == 2
    line = error_line(capsys.readouterr().err)
    assert str(out) in line and f"pid {os.getpid()}" in line
    assert not (out / "records").exists()  # nothing written by the refused run


def test_a_second_training_run_into_a_locked_dir_is_refused_naming_the_pid(
    tiny_random_model, tmp_path, capsys
):
    run = tmp_path / "run"
    with RunLock(run):
        assert train_cli(train_args(tiny_random_model, run)) == 2
    line = error_line(capsys.readouterr().err)
    assert str(run) in line and f"pid {os.getpid()}" in line
    assert not list(run.glob("checkpoint-*"))


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(
    model, tiny_probe_recipe, tmp_path, caplog
):
    out = tmp_path / "probe"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}) + "\n")
    with caplog.at_level(logging.WARNING):
        assert probe_cli(probe_args(model, tiny_probe_recipe, out, "--num_problems", "2")) == 0
    assert any(f"pid {dead.pid}" in r.getMessage() and "stale" in r.getMessage() for r in caplog.records)
    assert (out / "summary.json").is_file()
    assert not (out / LOCK_FILE).exists()  # released when the run ended


def test_two_probe_processes_into_one_dir_one_runs_the_other_is_refused(model, tiny_probe_recipe, tmp_path):
    out = tmp_path / "probe"
    # a budget the first cannot finish before the second has started, been refused and exited
    args = [sys.executable, "-m", "probe", *probe_args(model, tiny_probe_recipe, out, "--n", "100000")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "records").is_dir() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the first holds the lock from before it writes anything
        assert first.poll() is None, first.stderr.read().decode()[-3000:]
        second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"pid {first.pid}" in error_line(second.stderr)
        assert first.poll() is None  # the first was never disturbed
    finally:
        first.kill()
        first.wait()


def complete_steps(run: Path) -> list[int]:
    return [step for step, path in run_checkpoints(run) if is_complete_checkpoint(path)]


def lock_holder(run: Path) -> int | None:
    """The pid the lock file names (None while absent, or between its creation and the holder's write)."""
    try:
        return json.loads((run / LOCK_FILE).read_text())["pid"]
    except (FileNotFoundError, ValueError, KeyError):
        return None


def ranks_of(launch: subprocess.Popen) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return psutil.Process(launch.pid).children(recursive=True)
    return []


def end_launch(launch: subprocess.Popen) -> None:
    """Kill a launch and every rank of it: torchrun starts its ranks in sessions of their own, so its
    process group alone would leave them running."""
    for rank in ranks_of(launch):
        with contextlib.suppress(psutil.NoSuchProcess):
            rank.kill()
    launch.kill()
    launch.wait()


@pytest.mark.slow
def test_two_ranks_hold_one_lock_and_a_second_launch_is_refused(tiny_base, tmp_path):
    """`accelerate launch` with configs/accelerate/cpu2.yaml: while the first launch trains, its rank 0
    holds the lock, and a second launch into the same dir is refused on each of its ranks naming that pid;
    the first trains on undisturbed. The first gets more steps than it can run and is killed at the end:
    a short first run (8 steps: ~3 s under the lock) ended before the second launch's ranks reached
    their lock attempt (12-17 s of start-up on a quiet machine), and the second found a finished run."""
    run = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "configs" / "accelerate" / "cpu2.yaml"), "-m", "train"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"OMP_NUM_THREADS": "1"}
    args = [*launch, *train_args(tiny_base, run, "--max_steps", "1000000", "--save_steps", "20")]
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with first_log.open("w") as log:
        first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    second = None
    try:
        # the first is mid-run: both ranks built their trainer and it saved a complete checkpoint
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and first.poll() is None:
            started = set(re.findall(r"train INFO: process (\d+) of 2", first_log.read_text()))
            if started == {"0", "1"} and complete_steps(run):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the first launch never got to train:\n{first_log.read_text()[-3000:]}")
        # ... under its lock, taken before the trainer was built: the lock file names a live rank of it
        holder = lock_holder(run)
        assert holder in {rank.pid for rank in ranks_of(first)}, f"lock file names {holder}"

        with second_log.open("w") as log:
            second = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
        # a second launch that got past the lock builds its trainer (or finds the run finished): stop there
        passed = re.compile(r"train INFO: process \d+ of 2|nothing left to do|resuming ")
        deadline = time.monotonic() + 600
        while second.poll() is None and time.monotonic() < deadline:
            if passed.search(second_log.read_text()):
                break
            time.sleep(0.2)
        err = second_log.read_text()
        assert not passed.search(err), f"the second launch got past the lock:\n{err[-3000:]}"
        assert second.poll() is not None, f"the second launch neither ran nor ended:\n{err[-3000:]}"
        refusals = [line for line in err.splitlines() if "train: error: " in line]
        assert len(refusals) == 2, err[-3000:]  # each rank read rank 0's refusal
        assert all(f"{run} is in use by pid {holder} " in line for line in refusals), err[-3000:]
        assert second.returncode != 0  # the launcher reports its ranks' exit 2 as a failure of its own

        # the first was never disturbed: same holder, and it trains on past where it was at the refusal
        at_refusal = max(complete_steps(run))
        deadline = time.monotonic() + 600
        while max(complete_steps(run)) == at_refusal and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, first_log.read_text()[-3000:]
        assert lock_holder(run) == holder
        assert max(complete_steps(run)) > at_refusal
    finally:
        for process in (second, first):
            if process is not None:
                end_launch(process)
