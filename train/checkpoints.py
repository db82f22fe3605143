"""Checkpoints and a final model that are whole, or set aside: a kill at any moment of a save leaves
nothing that is resumed from, probed, or deleted.

- A checkpoint RUN/checkpoint-N/ counts once its manifest, checkpoint_complete.json (probe.files), lists
  its files: written last, after every rank's files and leash's own (the moved ProRL reference). At the
  start of a run, rank 0 renames each checkpoint dir without a whole manifest to
  RUN/incomplete-checkpoint-N (a name the trainer's rotation never deletes), with a warning, and the run
  resumes from the last complete checkpoint. (A run dir from before manifests keeps the checkpoints whose
  trainer files are whole.)
- The final model is written into RUN/.final-partial/, its files moved into RUN one rename each, and
  RUN/final_model.json lists them last (it is removed before the first rename). "Nothing left to do"
  means the last checkpoint is at max_steps and final_model.json is whole for that step; otherwise the
  final model is published again from that checkpoint's files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from probe.distributed import barrier
from probe.files import fsync_dir, read_manifest, write_manifest
from probe.models import ModelError, check_weights_file
from probe.store import (
    CHECKPOINT_MANIFEST,
    FINAL_ASIDE,
    FINAL_MANIFEST,
    is_complete_checkpoint,
    run_checkpoints,
)

logger = logging.getLogger(__name__)

SET_ASIDE_PREFIX = "incomplete-"
REFERENCE_FILE = "reference_model.safetensors"  # in a checkpoint dir, once the ProRL reference has moved
# Checkpoint files that only resuming training reads (the rest is what save_model writes).
TRAINING_ONLY = re.compile(
    rf"optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth|latest|zero_to_fp32\.py|"
    rf"{re.escape(CHECKPOINT_MANIFEST)}|{re.escape(REFERENCE_FILE)}"
)


# --- checkpoints


def mark_checkpoint_complete(checkpoint: Path, step: int) -> None:
    write_manifest(checkpoint, CHECKPOINT_MANIFEST, global_step=step)


def looks_whole(checkpoint: Path) -> bool:
    """For checkpoints written before leash wrote manifests: the trainer's own files are whole
    (trainer_state.json names this step; every torch file is a whole zip archive, whose directory is
    written last; every safetensors file's size matches its header; every JSON file parses)."""
    try:
        step = json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
        if f"{PREFIX_CHECKPOINT_DIR}-{step}" != checkpoint.name:
            return False
        for path in checkpoint.iterdir():
            if path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
                return False
            if path.suffix == ".safetensors":
                check_weights_file(path)
            if path.suffix == ".json":
                json.loads(path.read_text())
    except (OSError, ValueError, KeyError, TypeError, ModelError):
        return False
    return True


def set_aside_incomplete(run_dir: Path) -> list[Path]:
    """Rank 0, before the run resumes: rename every incomplete checkpoint dir aside (never delete it).

    In a run dir where leash has written no manifest yet (all of it older than manifests), a checkpoint
    whose trainer files are whole is kept and given its manifest."""
    moved = []
    found = run_checkpoints(run_dir)
    written_before_manifests = not (run_dir / FINAL_MANIFEST).exists() and not any(
        (path / CHECKPOINT_MANIFEST).exists() for _, path in found
    )
    for step, path in found:
        if is_complete_checkpoint(path):
            continue
        if written_before_manifests and looks_whole(path):
            logger.info("%s predates checkpoint manifests and its files are whole: kept", path)
            mark_checkpoint_complete(path, step)
            continue
        target = run_dir / f"{SET_ASIDE_PREFIX}{path.name}"
        number = 1
        while target.exists():
            number += 1
            target = run_dir / f"{SET_ASIDE_PREFIX}{path.name}-{number}"
        path.rename(target)
        logger.warning(
            "%s is incomplete (no whole %s: the run died while saving it); set aside as %s, resuming from "
            "the last complete checkpoint",
            path,
            CHECKPOINT_MANIFEST,
            target,
        )
        moved.append(target)
    return moved


def last_complete_checkpoint(run_dir: Path) -> str | None:
    complete = [path for _, path in run_checkpoints(run_dir) if is_complete_checkpoint(path)]
    return str(complete[-1]) if complete else None


# --- the final model


def final_is_complete(run_dir: Path, step: int) -> bool:
    manifest = read_manifest(run_dir, FINAL_MANIFEST)
    return manifest is not None and manifest.get("global_step") == step


def save_final(trainer, run_dir: Path) -> None:
    """The trained model as a plain HF model dir in RUN (LoRA: the adapter, naming its base), plus the
    whole trainer state; every rank calls this (ZeRO-3 gathers the weights), rank 0 writes."""
    aside = run_dir / FINAL_ASIDE
    if trainer.args.should_save:
        (run_dir / FINAL_MANIFEST).unlink(missing_ok=True)  # from here on the final model is not complete
        shutil.rmtree(aside, ignore_errors=True)  # a killed save's leftovers
    barrier("final save begins", trainer.args.ddp_timeout)
    trainer.save_model(str(aside))
    if trainer.args.should_save:
        trainer.state.save_to_json(str(aside / "trainer_state.json"))  # the log history, train_runtime in
        publish(aside, run_dir, trainer.state.global_step)
    barrier("final model published", trainer.args.ddp_timeout)


def final_from_checkpoint(checkpoint: Path, run_dir: Path, step: int) -> None:
    """Rank 0: the final model again from the checkpoint of the last step, when a kill interrupted its
    save. What save_model wrote into the checkpoint is what it writes into RUN: the checkpoint's files
    less those only training reads (optimizer, scheduler, RNG states, DeepSpeed's, leash's own), and its
    trainer_state.json (the log history up to that step)."""
    aside = run_dir / FINAL_ASIDE
    (run_dir / FINAL_MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for path in sorted(checkpoint.iterdir()):
        if path.is_file() and not TRAINING_ONLY.fullmatch(path.name):
            shutil.copy2(path, aside / path.name)
    publish(aside, run_dir, step)


def publish(aside: Path, run_dir: Path, step: int) -> None:
    """Move the files of `aside` into `run_dir` (each rename atomic), then list them in final_model.json."""
    names = sorted(path.name for path in aside.iterdir())
    for name in names:
        os.replace(aside / name, run_dir / name)
    fsync_dir(run_dir)
    write_manifest(run_dir, FINAL_MANIFEST, files=names, global_step=step)
    aside.rmdir()
