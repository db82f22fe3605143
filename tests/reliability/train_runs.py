"""`python -m train` on the tiny base as a subprocess, short and without probes unless asked: 4 steps,
a checkpoint every 2, one log row per step. With `kill`, the run goes through kill_at.py, which ends
it at that point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "train" / "countdown_tiny.yaml"
KILL_AT = Path(__file__).resolve().parent / "kill_at.py"
# Drawn like conftest's tiny probe set (3 numbers, targets 1..30) with another seed.
TRAIN_TASK = {"num_problems": 60, "seed": 7, "unique_problems": False, "min_numbers": 3, "max_numbers": 3,
              "min_target": 1, "max_target": 30}  # fmt: skip


def train_args(base: Path, run: Path, *extra: str) -> list[str]:
    return [
        "--config", str(RECIPE), "--model_name_or_path", str(base), "--output_dir", str(run),
        "--probe_recipe", "", "--probe_steps", "0", "--report_to", "none",
        "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1",
        "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "8",
        "--train_task", json.dumps(TRAIN_TASK), *extra,
    ]  # fmt: skip


def train(
    base: Path, run: Path, *extra: str, kill: str | None = None, step: int = 0
) -> subprocess.CompletedProcess:
    """One run (argparse takes the last value of a repeated option, so `extra` overrides the defaults)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(run.parent)  # no ~/.netrc: W&B falls back to offline by itself
    env["OMP_NUM_THREADS"] = "1"
    # kill_at.py is a script: it imports train/ from this repo, not from wherever leash is installed
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    entry = [str(KILL_AT), kill, str(step)] if kill else ["-m", "train"]
    return subprocess.run(
        [sys.executable, *entry, *train_args(base, run, *extra)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
