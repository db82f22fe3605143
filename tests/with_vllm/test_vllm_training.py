"""In-training probes through TRL's colocated vLLM engine, on CPU (weight sync shim: see
train_with_cpu_weight_sync.py); a resumed run re-probes the base through the engine (finding 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RECIPE = ROOT / "configs" / "train" / "countdown_tiny.yaml"
TRAIN_TASK = {"num_problems": 300, "seed": 7, "unique_problems": False, "min_numbers": 3, "max_numbers": 3,
              "min_target": 1, "max_target": 30}  # fmt: skip
PROBE_SAMPLING = "n: 16\nmax_new_tokens: 16\nbatch_size: 16\nproblems_per_call: 8\nbackend: vllm\n"


def run_train(base: Path, run_dir: Path, probe_recipe: Path, *extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(run_dir.parent)  # no ~/.netrc: W&B offline
    launcher = [sys.executable, str(HERE / "train_with_cpu_weight_sync.py")]
    if torch.cuda.is_available():  # TRL's own weight sync works on GPUs
        launcher = [sys.executable, "-m", "train"]
    args = [
        *launcher, "--config", str(RECIPE), "--model_name_or_path", str(base), "--output_dir", str(run_dir),
        "--probe_recipe", str(probe_recipe), "--probe_steps", "2", "--max_completion_length", "16",
        "--save_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "16",
        "--train_task", json.dumps(TRAIN_TASK), "--use_vllm", "true", "--vllm_mode", "colocate",
        "--vllm_gpu_memory_utilization", "0.3", "--report_to", "none", *extra,
    ]  # fmt: skip
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]


def _summary(run_dir: Path, step: int) -> dict:
    return json.loads((run_dir / "probes" / f"step-{step:06d}" / "summary.json").read_text())


def test_vllm_probes_in_training_and_the_base_reprobed_after_a_resume(
    vllm_env, tiny_base_vllm, tiny_probe_recipe, tmp_path
):
    recipe = tmp_path / "probe_vllm.yaml"
    recipe.write_text(tiny_probe_recipe.read_text() + PROBE_SAMPLING)
    run_dir = tmp_path / "run"
    run_train(tiny_base_vllm, run_dir, recipe, "--max_steps", "2")
    first = {step: _summary(run_dir, step) for step in (0, 2)}
    for summary in first.values():
        assert summary["entropy_source"] == "vllm_top_logprobs_renormalised"
        assert 0.0 <= summary["metrics"]["pass@1"] <= summary["metrics"]["pass@16"] <= 1.0
    state = json.loads((run_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "probe/pass@1" in h] == [0, 2]

    # the base probe "never finished": a resumed run probes the base weights again, through the
    # engine (reloaded from the base checkpoint), then gives the engine the policy back
    base_probe = run_dir / "probes" / "step-000000"
    for path in sorted(base_probe.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    base_probe.rmdir()
    run_train(tiny_base_vllm, run_dir, recipe, "--max_steps", "4")
    again = _summary(run_dir, 0)
    assert again["metrics"] == first[0]["metrics"], "the base re-probed after the resume is the base"
    step4 = _summary(run_dir, 4)
    assert step4["metrics"] != again["metrics"], "after the re-probe the engine holds the policy again"
