"""The real `python -m train` entry on the tiny base: it trains, checkpoints, probes, logs to W&B
offline, resumes without a gap or a repeat, and refuses bad recipes before any work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from launching import launch
from safetensors.torch import load_file
from wandb_offline import history_rows

from train.grpo import cli

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "train" / "countdown_tiny.yaml"

# Drawn like conftest's tiny probe set (3 numbers, targets 1..30), another seed; probe problems held out.
TRAIN_TASK = {"num_problems": 300, "seed": 7, "unique_problems": False, "min_numbers": 3, "max_numbers": 3,
              "min_target": 1, "max_target": 30}  # fmt: skip


def probe_steps_in_wandb(run_dir: Path) -> list[int]:
    return [int(r["train/global_step"]) for r in history_rows(run_dir) if "probe/pass@1" in r]


# --- running the entry


def run_train(tiny_base: Path, run_dir: Path, probe_recipe: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(run_dir.parent)  # no ~/.netrc: W&B must fall back to offline by itself
    args = [
        sys.executable, "-m", "train", "--config", str(RECIPE),
        "--model_name_or_path", str(tiny_base), "--output_dir", str(run_dir),
        "--probe_recipe", str(probe_recipe), "--probe_n", "4", "--probe_steps", "2",
        "--max_completion_length", "16", "--save_steps", "2", "--logging_steps", "1",
        "--per_device_train_batch_size", "16", "--train_task", json.dumps(TRAIN_TASK), *extra,
    ]  # fmt: skip
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def first_run(tiny_base, tiny_probe_recipe, tmp_path_factory):
    """Two steps: probes at steps 0 and 2, a checkpoint at 2; the format reward on at weight 0.5."""
    run_dir = tmp_path_factory.mktemp("grpo") / "run"
    run_train(tiny_base, run_dir, tiny_probe_recipe, "--max_steps", "2", "--format_reward_weight", "0.5")
    return run_dir, tiny_probe_recipe


def test_training_changes_the_parameters(first_run, tiny_base):
    run_dir, _ = first_run
    before, after = load_file(tiny_base / "model.safetensors"), load_file(run_dir / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_probe_points_are_checkpointed_and_probed(first_run):
    run_dir, _ = first_run
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    probes = sorted(p.name for p in (run_dir / "probes").iterdir())
    assert probes == ["step-000000", "step-000002"]
    for name in probes:
        summary = json.loads((run_dir / "probes" / name / "summary.json").read_text())
        assert 0.0 <= summary["metrics"]["pass@1"] <= summary["metrics"]["pass@4"] <= 1.0
    assert (run_dir / "plots" / "pass_at_k.png").is_file()


def test_wandb_offline_files_hold_probe_keys_at_the_probe_steps(first_run):
    run_dir, _ = first_run
    assert (run_dir / "wandb_run_id").is_file()
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1
    assert probe_steps_in_wandb(run_dir) == [0, 2]
    row = next(r for r in history_rows(run_dir) if "probe/pass@1" in r and r["train/global_step"] == 2)
    for key in ("probe/pass@4", "probe/support_size", "probe/vs_base/P", "probe/vs_base/O", "probe/seconds"):
        assert key in row, key
    assert "train/loss" in row  # the probe joined the trainer's own row at step 2
    figures = [r for r in history_rows(run_dir) if "plots/pass_at_k/_type" in r]
    assert [(r["train/global_step"], r["plots/pass_at_k/_type"]) for r in figures] == [(2, "image-file")]


def test_format_reward_is_weighted_in_and_verdict_reasons_are_logged(first_run):
    run_dir, _ = first_run
    state = json.loads((run_dir / "checkpoint-2" / "trainer_state.json").read_text())
    rows = [h for h in state["log_history"] if "reward" in h]
    assert [h["step"] for h in rows] == [1, 2]
    for row in rows:
        correct, follows = row["rewards/countdown_correct/mean"], row["rewards/countdown_format/mean"]
        assert row["reward"] == pytest.approx(correct + 0.5 * follows, rel=1e-5)  # TRL's reward_weights
        # counts per generation batch (16 completions): the completions outside the answer format
        unformatted = (
            row["rewards/countdown_correct/no_answer"] + row["rewards/countdown_correct/outside_grammar"]
        )
        assert unformatted / 16 == pytest.approx(1.0 - follows, rel=1e-5)
        assert (
            row["rewards/countdown_correct/verifier_timeout"]
            == row["rewards/countdown_correct/too_long"]
            == 0
        )
    wandb_row = next(r for r in history_rows(run_dir) if "train/rewards/countdown_correct/no_answer" in r)
    assert "train/rewards/countdown_format/mean" in wandb_row


def test_resume_continues_without_gap_or_repeat(first_run, tiny_base):
    run_dir, probe_recipe = first_run
    run_train(tiny_base, run_dir, probe_recipe, "--max_steps", "4")
    state = json.loads((run_dir / "checkpoint-4" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]
    assert [h["step"] for h in state["log_history"] if "probe/pass@1" in h] == [0, 2, 4]
    assert probe_steps_in_wandb(run_dir) == [0, 2, 4]
    run_ids = {p.name.rsplit("-", 1)[1] for p in run_dir.glob("wandb/offline-run-*")}
    assert run_ids == {(run_dir / "wandb_run_id").read_text().strip()}  # the same W&B run, continued

    again = run_train(tiny_base, run_dir, probe_recipe, "--max_steps", "4")
    assert "nothing left to do" in again.stderr


# --- refusals, before any model is loaded


@pytest.fixture
def recipe_args(tiny_base, tmp_path):
    return [
        "--config",
        str(RECIPE),
        "--model_name_or_path",
        str(tiny_base),
        "--output_dir",
        str(tmp_path / "r"),
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--not_a_field", "1"], "not_a_field"),
        (["--beta", "0", "--ref_reset_steps", "10"], "ref_reset_steps=10 while beta=0"),
        (
            [
                "--holdout_probe_problems",
                "false",
                "--train_task",
                '{"seed": 1234, "num_problems": 200, "min_target": 10, "max_target": 150}',
            ],
            "probe problems overlap training prompts",
        ),
        (["--per_device_train_batch_size", "12", "--num_generations", "8"], "divisible by num_generations"),
        (["--model_name_or_path", "runs/no/such_model"], "base model dir runs/no/such_model does not exist"),
        (["--dynamic_sampling", "true", "--loss_type", "grpo"], "dynamic_sampling with loss_type='grpo'"),
        (["--format_reward_weight", "0.5", "--reward_weights", "1", "2"], "format_reward_weight and reward_"),
        (["--format_reward_weight", "-1"], "format_reward_weight must be >= 0"),
    ],
    ids=[
        "unknown-key",
        "reset-without-kl",
        "probe-overlap",
        "batch-not-divisible",
        "missing-base",
        "ds-loss",
        "two-weightings",
        "negative-format-weight",
    ],
)
def test_bad_recipe_is_refused_naming_the_problem(recipe_args, extra, message, capsys):
    assert cli([*recipe_args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (Path(recipe_args[-1]) / "checkpoint-1").exists()


def test_zero3_probes_without_gathered_weights_are_refused(tiny_base, tiny_probe_recipe, tmp_path):
    """In-training HF probes gather the full weights under ZeRO-3 (else ranks deadlock in the forward
    collectives); a recipe that rules gathering out is refused before any model is loaded."""
    from types import SimpleNamespace

    from trl import ModelConfig

    from probe.cli import ConfigError
    from train.config import LeashGRPOConfig, validate

    config = LeashGRPOConfig(
        output_dir=str(tmp_path), probe_recipe=str(tiny_probe_recipe), use_cpu=True,
        ds3_gather_for_generation=False,
    )  # fmt: skip
    model_args = ModelConfig(model_name_or_path=str(tiny_base))
    validate(config, model_args)  # no DeepSpeed: nothing to gather
    config.deepspeed_plugin = SimpleNamespace(zero_stage=3)  # what `accelerate launch` with zero3*.yaml sets
    with pytest.raises(ConfigError, match="ds3_gather_for_generation: false under ZeRO-3"):
        validate(config, model_args)


@pytest.mark.slow
def test_two_cpu_processes_train_and_probe_together(tiny_base, tiny_probe_recipe, tmp_path):
    """`accelerate launch` with configs/accelerate/cpu2.yaml: count the ranks actually started."""
    run_dir = tmp_path / "run"
    # a hung launch is killed, every process of it, and fails the test
    result = launch(
        "cpu2.yaml", "--config", str(RECIPE),
        "--model_name_or_path", str(tiny_base), "--output_dir", str(run_dir),
        "--probe_recipe", str(tiny_probe_recipe), "--probe_n", "4", "--probe_steps", "2",
        "--max_completion_length", "16", "--save_steps", "2", "--logging_steps", "1",
        "--per_device_train_batch_size", "8", "--max_steps", "2", "--report_to", "none",
        "--train_task", json.dumps(TRAIN_TASK),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    started = set(re.findall(r"train INFO: process (\d+ of \d+)", result.stderr))
    assert started == {"0 of 2", "1 of 2"}
    assert (run_dir / "checkpoint-2").is_dir()
    for step in ("step-000000", "step-000002"):
        summary = json.loads((run_dir / "probes" / step / "summary.json").read_text())
        assert summary["num_problems"] == 24
