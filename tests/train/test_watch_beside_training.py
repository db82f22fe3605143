"""`python -m probe watch` beside a "probe by watcher" training run: the same probe dirs as in-training
probes, through a kill -9 of the watcher and the trainer deleting old checkpoints; W&B rows on the
training step axis, in the training run's group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_grpo import RECIPE, ROOT, TRAIN_TASK, run_train
from wandb_offline import wandb_records

from probe.store import load_problems, run_probe_dirs

N = "4"


def _train_args(tiny_base: Path, run_dir: Path, probe_recipe: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "train", "--config", str(RECIPE),
        "--model_name_or_path", str(tiny_base), "--output_dir", str(run_dir),
        "--probe_recipe", str(probe_recipe), "--probe_n", N, "--probe_steps", "2", "--max_steps", "4",
        "--max_completion_length", "16", "--save_steps", "2", "--logging_steps", "1",
        "--per_device_train_batch_size", "16", "--train_task", json.dumps(TRAIN_TASK), *extra,
    ]  # fmt: skip


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(home)  # no ~/.netrc: W&B falls back to offline by itself
    return env


def _watch(run_dir: Path, probe_recipe: Path, home: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "probe", "watch", str(run_dir), "--config", str(probe_recipe),
            "--n", N, "--poll_seconds", "0.5"]  # fmt: skip
    return subprocess.Popen(args, cwd=ROOT, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(condition, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _records(run_dir: Path) -> dict[int, list[dict]]:
    return {step: load_problems(directory) for step, directory in run_probe_dirs(run_dir)}


@pytest.fixture(scope="module")
def runs(tiny_base, tiny_probe_recipe, tmp_path_factory):
    """(in-training run, watched run): the same recipe, 4 steps, probes at 0, 2 and 4."""
    root = tmp_path_factory.mktemp("watch")
    inline = root / "inline"
    run_train(tiny_base, inline, tiny_probe_recipe, "--max_steps", "4")

    watched = root / "watched"
    # save_total_limit 1: checkpoint-2 is deleted when checkpoint-4 is saved
    args = _train_args(
        tiny_base, watched, tiny_probe_recipe, "--probe_by", "watcher", "--save_total_limit", "1"
    )
    trainer = subprocess.Popen(
        args, cwd=ROOT, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    _wait_for(lambda: (watched / "watch.json").is_file(), "the trainer's watch.json")
    first = _watch(watched, tiny_probe_recipe, root)
    _wait_for(lambda: (watched / "probes" / "step-000000").is_dir(), "the watcher's first probe dir")
    os.kill(first.pid, signal.SIGKILL)  # mid-probe of the base (or just after): the next one resumes
    first.wait()
    second = _watch(watched, tiny_probe_recipe, root)
    trained, _ = trainer.communicate(timeout=900)
    assert trainer.returncode == 0, trained[-3000:]
    watched_out, _ = second.communicate(timeout=900)  # stops by itself once training finished
    assert second.returncode == 0, watched_out[-3000:]
    return inline, watched


def test_the_watcher_writes_the_probe_dirs_of_in_training_probes(runs):
    inline, watched = runs
    assert not (watched / "checkpoint-2").exists()  # rotated away by save_total_limit, probed anyway
    ours, theirs = _records(watched), _records(inline)
    assert sorted(ours) == sorted(theirs) == [0, 2, 4]
    for step in ours:
        # the same samples and verdicts; timing aside, entropies may differ by float32 rounding
        # (the watcher's process and the trainer's run the model with other thread counts)
        variable = ("seconds", "token_entropy")
        assert [{k: v for k, v in r.items() if k not in variable} for r in ours[step]] == [
            {k: v for k, v in r.items() if k not in variable} for r in theirs[step]
        ]
        np.testing.assert_allclose(
            [r["token_entropy"] for r in ours[step]], [r["token_entropy"] for r in theirs[step]], atol=1e-6
        )
        config = json.loads((watched / "probes" / f"step-{step:06d}" / "config.json").read_text())
        expected = (inline / "probes" / f"step-{step:06d}" / "config.json").read_text()
        assert config == json.loads(expected.replace(str(inline), str(watched)))
    assert not list((watched / "probes" / ".pinned").glob("checkpoint-*"))  # pins dropped once probed
    assert json.loads((watched / "watch.json").read_text())["finished"] is True


def _offline_runs(run_dir: Path) -> dict[str, list]:
    """W&B offline run id -> its records (every offline dir of that id, in start order)."""
    runs: dict[str, list] = {}
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        runs.setdefault(path.stem.removeprefix("run-"), []).extend(wandb_records(path))
    return runs


def _rows(records) -> list[dict]:
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            )
    return rows


def test_watcher_metrics_reach_wandb_on_the_training_step_axis_in_the_training_group(runs):
    inline, watched = runs
    train_id = (watched / "wandb_run_id").read_text().strip()
    offline = _offline_runs(watched)
    assert sorted(offline) == sorted([train_id, f"{train_id}-probes"])
    probe_records = offline[f"{train_id}-probes"]
    (group,) = {r.run.run_group for r in probe_records if r.WhichOneof("record_type") == "run"}
    assert group == train_id
    (train_group,) = {r.run.run_group for r in offline[train_id] if r.WhichOneof("record_type") == "run"}
    assert train_group == train_id
    metrics = {(r.metric.glob_name or r.metric.name, r.metric.step_metric) for r in probe_records
               if r.WhichOneof("record_type") == "metric"}  # fmt: skip
    assert ("probe/*", "train/global_step") in metrics
    rows = [r for r in _rows(probe_records) if "probe/pass@1" in r]
    # logged once a probe dir is finished; a kill between logging and noting it may repeat a row
    assert sorted({r["train/global_step"] for r in rows}) == [0, 2, 4]
    inline_rows = {
        r["train/global_step"]: r
        for records in _offline_runs(inline).values()
        for r in _rows(records)
        if "probe/pass@1" in r
    }
    for row in rows:
        expected = inline_rows[row["train/global_step"]]
        for key in ("probe/pass@1", "probe/pass@4", "probe/support_size"):
            assert row[key] == expected[key], key
        if row["train/global_step"]:
            assert row["probe/vs_base/P"] == expected["probe/vs_base/P"]
