"""Kill points of a training run (issue 11, points 5 and 6), each the real `python -m train` killed with
SIGKILL at a named moment of a save (kill_at.py), then rerun with the same command.

A half-written checkpoint is set aside (renamed, never deleted) with a warning and the run resumes from
the last complete one; a kill during the final save is redone from the last checkpoint, and only a
complete final model counts as "nothing left to do"; the run dir then probes.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from train_runs import train

from probe.__main__ import cli as probe_cli

KILLED = -signal.SIGKILL


def losses_logged(run: Path) -> list[int]:
    state = json.loads((run / "trainer_state.json").read_text())
    return [row["step"] for row in state["log_history"] if "loss" in row]


def set_aside(run: Path) -> list[Path]:
    return sorted(p for p in run.iterdir() if p.name.startswith("incomplete-checkpoint-"))


@pytest.mark.parametrize(
    ("point", "extra"),
    [
        ("checkpoint_dir_created", ()),
        ("optimizer_half_written", ()),
        # with ProRL reference resets the moved reference is saved after the trainer's own files: a
        # kill there leaves a checkpoint that looks whole to the trainer and would resume against the base
        ("before_marker", ("--beta", "0.04", "--ref_reset_steps", "2")),
    ],
)
def test_a_checkpoint_killed_mid_save_is_set_aside_and_the_run_resumes_from_the_last_complete_one(
    point, extra, tiny_base, tmp_path
):
    run = tmp_path / "run"
    died = train(tiny_base, run, *extra, kill=point, step=4)
    assert died.returncode == KILLED, died.stderr[-3000:]
    assert (run / "checkpoint-2").is_dir() and (run / "checkpoint-4").is_dir()
    left = sorted(p.name for p in (run / "checkpoint-4").iterdir())

    done = train(tiny_base, run, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {run} from {run}/checkpoint-2 (step 2)" in done.stderr
    (aside,) = set_aside(run)
    assert aside.name.startswith("incomplete-checkpoint-4")
    assert str(aside) in done.stderr  # the warning names where the half-written files went
    assert sorted(p.name for p in aside.iterdir()) == left  # renamed, nothing deleted
    assert losses_logged(run) == [1, 2, 3, 4]  # no step lost, none repeated
    state = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    torch.load(run / "checkpoint-4" / "optimizer.pt", weights_only=True)  # whole
    if "--ref_reset_steps" in extra:
        assert (run / "checkpoint-4" / "reference_model.safetensors").is_file()


def test_a_kill_during_the_final_save_is_redone_from_the_last_checkpoint_and_the_run_dir_probes(
    tiny_base, tiny_probe_recipe, tmp_path, capsys
):
    run = tmp_path / "run"
    died = train(tiny_base, run, kill="final_tokenizer_empty")
    assert died.returncode == KILLED, died.stderr[-3000:]
    assert (run / "checkpoint-4" / "trainer_state.json").is_file()
    probe = ["run", "--config", str(tiny_probe_recipe), "--model", str(run), "--n", "2",
             "--num_problems", "3", "--max_new_tokens", "8", "--progress", "false"]  # fmt: skip

    # before the rerun: the run dir is refused in one line, not probed half-saved
    assert probe_cli([*probe, "--output_dir", str(tmp_path / "early")]) == 2
    assert "final" in capsys.readouterr().err.strip().splitlines()[-1]

    done = train(tiny_base, run)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "nothing left to do" not in done.stderr
    assert json.loads((run / "tokenizer_config.json").read_text())["eos_token"] == "<eos>"
    assert (run / "tokenizer.json").is_file()
    assert json.loads((run / "trainer_state.json").read_text())["global_step"] == 4
    assert losses_logged(run) == [1, 2, 3, 4]

    assert probe_cli([*probe, "--output_dir", str(tmp_path / "probe")]) == 0
    assert json.loads((tmp_path / "probe" / "summary.json").read_text())["num_problems"] == 3

    again = train(tiny_base, run)
    assert again.returncode == 0 and "nothing left to do" in again.stderr
