"""probe watch on a hand-made run dir: pins (hard links that outlive the checkpoint), the --every
schedule, stopping once the run finished, refusals. The watcher beside a real training run is
tests/train/test_watch_beside_training.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tiny_lm import save_random

from probe.__main__ import cli
from probe.files import write_manifest
from probe.store import CHECKPOINT_MANIFEST, FINAL_MANIFEST, is_finished, probe_dir
from probe.watch import pin_checkpoint, pin_path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "configs/probe/countdown_tiny.yaml")


@pytest.fixture(scope="module")
def random_model_dir(tmp_path_factory):
    return save_random(tmp_path_factory.mktemp("model") / "random")


def _checkpoint(run_dir: Path, step: int, model: Path) -> Path:
    checkpoint = run_dir / f"checkpoint-{step}"
    shutil.copytree(model, checkpoint)
    (checkpoint / "optimizer.pt").write_bytes(b"optimizer state")
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    write_manifest(checkpoint, CHECKPOINT_MANIFEST, global_step=step)
    return checkpoint


def _watch(run_dir: Path, *extra: str) -> int:
    return cli(["watch", str(run_dir), "--config", RECIPE, "--n", "4", "--num_problems", "3",
                "--num_threads", "1", "--report_to", "none", "--poll_seconds", "0.1", *extra])  # fmt: skip


def test_a_pin_hard_links_the_model_files_and_outlives_the_checkpoint(random_model_dir, tmp_path):
    checkpoint = _checkpoint(tmp_path, 3, random_model_dir)
    pin = pin_checkpoint(tmp_path, 3, checkpoint)
    assert pin == pin_path(tmp_path, 3)
    assert (pin / "model.safetensors").stat().st_ino == (checkpoint / "model.safetensors").stat().st_ino
    assert not (pin / "optimizer.pt").exists()  # training state is not pinned
    shutil.rmtree(checkpoint)  # save_total_limit rotates it away
    assert (pin / "model.safetensors").read_bytes() == (random_model_dir / "model.safetensors").read_bytes()


def test_a_checkpoint_still_being_written_or_gone_is_not_pinned(random_model_dir, tmp_path):
    checkpoint = _checkpoint(tmp_path, 5, random_model_dir)
    (checkpoint / CHECKPOINT_MANIFEST).unlink()  # train.checkpoints writes it last
    assert pin_checkpoint(tmp_path, 5, checkpoint) is None
    assert not pin_path(tmp_path, 5).exists()
    assert not list(pin_path(tmp_path, 5).parent.glob(".checkpoint-5.tmp-*"))


def test_the_watcher_probes_due_checkpoints_and_stops_once_the_run_finished(random_model_dir, tmp_path):
    for step in (1, 2, 4):
        _checkpoint(tmp_path, step, random_model_dir)
    (tmp_path / "model.safetensors").write_bytes(b"final")
    write_manifest(tmp_path, FINAL_MANIFEST, files=["model.safetensors"])  # trained without watch.json: done
    assert _watch(tmp_path, "--every", "2") == 0
    assert [is_finished(probe_dir(tmp_path, s)) for s in (1, 2, 4)] == [False, True, True]
    config = json.loads((probe_dir(tmp_path, 4) / "config.json").read_text())
    assert config["model"] == f"{tmp_path}/checkpoint-4"  # the name the trainer gives it
    assert not list(pin_path(tmp_path, 2).parent.glob("checkpoint-*"))  # pins dropped once probed
    assert _watch(tmp_path, "--every", "2") == 0  # nothing left: stops at once


def test_bad_watch_arguments_are_refused_in_one_line(capsys, tmp_path):
    assert _watch(tmp_path / "missing") == 2
    assert "is not a directory" in capsys.readouterr().err
    assert _watch(tmp_path, "--every", "0") == 2
    assert "every must be >= 1" in capsys.readouterr().err
