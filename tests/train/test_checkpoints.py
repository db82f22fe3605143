"""train.checkpoints on hand-made run dirs: what counts as complete, what is set aside (and under which
name), the legacy rule for run dirs older than manifests, and the final model's publication."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers.trainer_utils import rotate_checkpoints

from probe.store import FINAL_MANIFEST
from train.checkpoints import (
    final_is_complete,
    last_complete_checkpoint,
    mark_checkpoint_complete,
    publish,
    set_aside_incomplete,
)


def checkpoint(run: Path, step: int, complete: bool = True, optimizer_cut: bool = False) -> Path:
    path = run / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    torch.save({"state": {0: torch.ones(64)}}, path / "optimizer.pt")
    if optimizer_cut:
        data = (path / "optimizer.pt").read_bytes()
        (path / "optimizer.pt").write_bytes(data[: len(data) // 2])
    if complete:
        mark_checkpoint_complete(path, step)
    return path


def test_incomplete_checkpoints_are_renamed_aside_and_the_last_complete_one_is_resumed(tmp_path, caplog):
    checkpoint(tmp_path, 2)
    checkpoint(tmp_path, 4, complete=False)
    (tmp_path / "checkpoint-6").mkdir()  # killed the moment it appeared
    moved = set_aside_incomplete(tmp_path)
    assert [p.name for p in moved] == ["incomplete-checkpoint-4", "incomplete-checkpoint-6"]
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert "incomplete-checkpoint-4" in caplog.text
    checkpoint(tmp_path, 4, complete=False)  # died at the same step again: a second name, nothing lost
    assert [p.name for p in set_aside_incomplete(tmp_path)] == ["incomplete-checkpoint-4-2"]


def test_a_checkpoint_cut_short_after_it_was_marked_is_not_complete(tmp_path):
    path = checkpoint(tmp_path, 2)
    (path / "optimizer.pt").write_bytes((path / "optimizer.pt").read_bytes()[:100])
    assert last_complete_checkpoint(tmp_path) is None


def test_the_trainers_rotation_never_deletes_a_set_aside_checkpoint(tmp_path):
    checkpoint(tmp_path, 2, complete=False, optimizer_cut=True)
    set_aside_incomplete(tmp_path)
    for step in (4, 6, 8):
        checkpoint(tmp_path, step)
    rotate_checkpoints(str(tmp_path), save_total_limit=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-8", "incomplete-checkpoint-2"]


def test_a_run_dir_older_than_manifests_keeps_its_whole_checkpoints(tmp_path):
    checkpoint(tmp_path, 2, complete=False)
    checkpoint(tmp_path, 4, complete=False, optimizer_cut=True)
    assert [p.name for p in set_aside_incomplete(tmp_path)] == ["incomplete-checkpoint-4"]
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")  # and now it has a manifest


def test_once_any_manifest_exists_a_checkpoint_without_one_is_incomplete(tmp_path):
    checkpoint(tmp_path, 2)
    checkpoint(tmp_path, 4, complete=False)  # whole trainer files, no manifest: died before it
    assert [p.name for p in set_aside_incomplete(tmp_path)] == ["incomplete-checkpoint-4"]


def test_the_final_model_is_published_by_renames_and_listed_last(tmp_path):
    aside = tmp_path / ".final-partial"
    aside.mkdir()
    (aside / "model.safetensors").write_bytes(b"weights")
    (aside / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"older weights")
    assert not final_is_complete(tmp_path, 4)
    publish(aside, tmp_path, 4)
    assert not aside.exists()
    assert (tmp_path / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((tmp_path / FINAL_MANIFEST).read_text())["files"] == {
        "model.safetensors": 7,
        "tokenizer.json": 2,
    }
    assert final_is_complete(tmp_path, 4) and not final_is_complete(tmp_path, 6)
    (tmp_path / "tokenizer.json").write_text("")  # cut short later: no longer complete
    assert not final_is_complete(tmp_path, 4)
