"""DeepSpeed ZeRO-2 / ZeRO-3 for real: `accelerate launch` with two gloo ranks on CPU, on the tiny base.

Three launches (each ~40 s of start-up), several checks per launch:
- ZeRO-2 (configs/accelerate/zero2_cpu.yaml) with a NaN injected on one rank at the last step;
- ZeRO-3 with every threshold at 0 (zero3_cpu_tight.yaml: weights re-gathered on every forward, as
  with real models), probing and resetting the reference;
- the same run resumed under zero3_cpu.yaml (DeepSpeed's default thresholds).
Run with `make test-deepspeed` (keeps DeepSpeed's compiled extension in .cache/torch_extensions).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from launching import launch
from safetensors.torch import load_model
from transformers import AutoModelForCausalLM

from train.grpo import checkpoint_step
from train.prorl import REFERENCE_FILE

pytestmark = pytest.mark.deepspeed

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "train" / "countdown_tiny.yaml"
NAN_WORKER = Path(__file__).with_name("nan_on_one_rank.py")
RANK_TIMEOUT = 120  # s: --ddp_timeout, so a stuck cross-rank wait fails well inside launching.LAUNCH_TIMEOUT
TRAIN_TASK = {"num_problems": 300, "seed": 7, "unique_problems": False, "min_numbers": 3, "max_numbers": 3,
              "min_target": 1, "max_target": 30}  # fmt: skip
VARIABLE = ("seconds", "samples_per_second", "versions")  # wall-clock figures and library versions


# --- launching


def train_args(tiny_base: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "--config", str(RECIPE), "--model_name_or_path", str(tiny_base), "--output_dir", str(run_dir),
        "--max_completion_length", "16", "--logging_steps", "1", "--per_device_train_batch_size", "8",
        "--report_to", "none", "--train_task", json.dumps(TRAIN_TASK), "--ddp_timeout", str(RANK_TIMEOUT),
        "--beta", "0.04", "--ref_reset_steps", "2", *extra,
    ]  # fmt: skip


def started(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"train INFO: process (\d+ of \d+ \([^)]*\))", result.stderr))


# --- reading what a run left


def weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the model saved in `directory`, loaded with plain from_pretrained."""
    return AutoModelForCausalLM.from_pretrained(directory).state_dict()


def reference_weights(checkpoint: Path, architecture: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's saved reference, loaded (strictly: every tensor, at its full shape) into a model
    of the base's architecture, as a resumed run loads it."""
    model = AutoModelForCausalLM.from_pretrained(architecture)
    load_model(model, str(checkpoint / REFERENCE_FILE))
    return model.state_dict()


def assert_same_weights(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        assert torch.equal(value, actual[key]), key


def optimizer_states(checkpoint: Path) -> list[dict]:
    """Per rank: the torch optimizer's state inside a DeepSpeed ZeRO checkpoint ({} after a reset)."""
    states = []
    for path in sorted(checkpoint.glob("global_step*/*optim_states.pt")):
        saved = torch.load(path, weights_only=False)["optimizer_state_dict"]
        inner = (
            saved["base_optimizer_state"]
            if "base_optimizer_state" in saved
            else saved["optimizer_state_dict"]
        )
        states.append(inner["state"])
    return states


def adam_steps(checkpoint: Path) -> list[int]:
    """The step count of every optimizer state entry, over every rank."""
    return [int(entry["step"]) for state in optimizer_states(checkpoint) for entry in state.values()]


def probe_contents(directory: Path) -> dict:
    """What two probes of the same weights must share: config, samples, records, tables, metrics."""
    records = [
        {k: v for k, v in json.loads(line).items() if k != "seconds"}
        for path in sorted((directory / "records").glob("rank-*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    summary = json.loads((directory / "summary.json").read_text())
    return {
        "config": json.loads((directory / "config.json").read_text()),
        "samples": {p.name: p.read_bytes() for p in sorted((directory / "samples").glob("*.jsonl.gz"))},
        "records": sorted(records, key=lambda r: r["problem_index"]),
        "problems": pq.read_table(directory / "problems.parquet").to_pylist(),
        "summary": {k: v for k, v in summary.items() if k not in VARIABLE},
    }


def single_process_probe(model: Path, probe_recipe: Path, out: Path) -> Path:
    """`python -m probe run` of a checkpoint in one process, as the in-training probe was configured."""
    result = subprocess.run(
        [sys.executable, "-m", "probe", "run", "--config", str(probe_recipe), "--model", str(model),
         "--output_dir", str(out), "--n", "4", "--progress", "false"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# --- ZeRO-2, a NaN on one rank at the last step


@pytest.fixture(scope="module")
def zero2_run(tiny_base, tmp_path_factory):
    """4 steps, a checkpoint each step, reference + optimizer reset at step 2, a NaN on rank 1 at step 4."""
    run_dir = tmp_path_factory.mktemp("zero2") / "run"
    args = train_args(tiny_base, run_dir, "--max_steps", "4", "--save_steps", "1", "--probe_steps", "0",
                      "--probe_recipe", "")  # fmt: skip
    result = launch("zero2_cpu.yaml", "4", *args, script=(str(NAN_WORKER),))
    return run_dir, result


def test_zero2_runs_two_deepspeed_ranks(zero2_run):
    _, result = zero2_run
    assert started(result) == {"0 of 2 (DEEPSPEED, ZeRO-2)", "1 of 2 (DEEPSPEED, ZeRO-2)"}, result.stderr[
        -3000:
    ]


def test_nan_on_one_rank_stops_every_rank_without_saving_that_step(zero2_run):
    run_dir, result = zero2_run
    assert result.returncode == 1, result.stderr[-3000:]
    stops = re.findall(r"train: failed: non-finite loss at step (\d+) on rank\(s\) \[(\d+)\]", result.stderr)
    assert stops == [("4", "1"), ("4", "1")], result.stderr[-3000:]  # both ranks stopped, both name rank 1
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
        "checkpoint-3",
    ]


def test_zero2_training_changes_the_parameters(zero2_run, tiny_base):
    run_dir, _ = zero2_run
    before, after = weights(tiny_base), weights(run_dir / "checkpoint-3")
    assert {k: v.shape for k, v in before.items()} == {k: v.shape for k, v in after.items()}
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_zero2_reference_reset_and_optimizer_reset(zero2_run, tiny_base):
    run_dir, _ = zero2_run
    checkpoint = run_dir / "checkpoint-2"
    assert_same_weights(weights(checkpoint), reference_weights(checkpoint, tiny_base))
    assert optimizer_states(checkpoint) == [{}, {}]  # emptied on both ranks at the reset
    assert adam_steps(run_dir / "checkpoint-1") and set(adam_steps(run_dir / "checkpoint-1")) == {1}
    assert set(adam_steps(run_dir / "checkpoint-3")) == {1}  # re-initialised at step 3, not 3 steps old


# --- ZeRO-3 with every threshold at 0: probes and the reference reset, then a resume


@pytest.fixture(scope="module")
def zero3_run(tiny_base, tiny_probe_recipe, tmp_path_factory):
    """2 steps under zero3_cpu_tight.yaml: probes at 0 and 2, reference + optimizer reset and a
    checkpoint at 2; then resumed to step 3 under zero3_cpu.yaml with the base probe removed, so the
    resumed run probes the base itself (step 0) and the last step (3, checkpointed)."""
    run_dir = tmp_path_factory.mktemp("zero3") / "run"
    args = train_args(tiny_base, run_dir, "--probe_recipe", str(tiny_probe_recipe), "--probe_n", "4",
                      "--probe_steps", "2", "--save_steps", "2")  # fmt: skip
    first = launch("zero3_cpu_tight.yaml", *args, "--max_steps", "2")
    assert first.returncode == 0, first.stderr[-4000:]
    base_probe = run_dir / "probes" / "step-000000"
    kept_base_probe = run_dir.parent / "first-run-base-probe"
    shutil.copytree(base_probe, kept_base_probe)
    shutil.rmtree(base_probe)
    resumed = launch("zero3_cpu.yaml", *args, "--max_steps", "3")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    return run_dir, first, resumed, kept_base_probe


def test_zero3_runs_two_deepspeed_ranks(zero3_run):
    _, first, resumed, _ = zero3_run
    for result in (first, resumed):
        assert started(result) == {"0 of 2 (DEEPSPEED, ZeRO-3)", "1 of 2 (DEEPSPEED, ZeRO-3)"}


def test_zero3_checkpoints_open_with_plain_from_pretrained_and_training_moved_them(zero3_run, tiny_base):
    run_dir, _, _, _ = zero3_run
    base = weights(tiny_base)
    assert checkpoint_step(str(run_dir / "checkpoint-3")) == 3
    for directory in (run_dir / "checkpoint-2", run_dir / "checkpoint-3", run_dir):
        trained = weights(directory)
        assert {k: v.shape for k, v in trained.items()} == {k: v.shape for k, v in base.items()}
        assert any(not torch.equal(base[k], trained[k]) for k in base), directory


def test_zero3_saved_reference_is_the_policy_at_the_reset(zero3_run, tiny_base):
    run_dir, _, _, _ = zero3_run
    checkpoint = run_dir / "checkpoint-2"
    assert_same_weights(weights(checkpoint), reference_weights(checkpoint, tiny_base))


def test_zero3_resume_restores_the_reset_reference(zero3_run, tiny_base):
    """Step 3 is no reset step: the reference saved with checkpoint-3 is the one the resumed run
    loaded, which must be the policy of checkpoint-2 (not the base)."""
    run_dir, _, _, _ = zero3_run
    reference = reference_weights(run_dir / "checkpoint-3", tiny_base)
    assert_same_weights(weights(run_dir / "checkpoint-2"), reference)
    assert any(not torch.equal(reference[k], v) for k, v in weights(tiny_base).items())


def test_zero3_optimizer_reset_empties_the_state_and_training_continues(zero3_run):
    run_dir, _, _, _ = zero3_run
    assert optimizer_states(run_dir / "checkpoint-2") == [{}, {}]
    assert set(adam_steps(run_dir / "checkpoint-3")) == {1}


def test_zero3_tight_probe_finishes_and_equals_a_single_process_probe(zero3_run, tiny_probe_recipe, tmp_path):
    run_dir, _, _, _ = zero3_run
    probes = sorted(p.name for p in (run_dir / "probes").iterdir())
    assert probes == ["step-000000", "step-000002", "step-000003"]
    alone = single_process_probe(run_dir / "checkpoint-2", tiny_probe_recipe, tmp_path / "alone")
    assert probe_contents(run_dir / "probes" / "step-000002") == probe_contents(alone)


def test_zero3_base_probes_equal_a_single_process_probe_of_the_base(
    zero3_run, tiny_base, tiny_probe_recipe, tmp_path
):
    """Step 0 probed at the start of the tight run, and again (base weights reloaded) in the resumed run."""
    run_dir, _, _, first_base_probe = zero3_run
    alone = probe_contents(single_process_probe(tiny_base, tiny_probe_recipe, tmp_path / "alone"))
    assert probe_contents(first_base_probe) == alone
    assert probe_contents(run_dir / "probes" / "step-000000") == alone
