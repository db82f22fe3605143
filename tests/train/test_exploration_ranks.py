"""The exploration options under 2 gloo ranks (`accelerate launch` with configs/accelerate/cpu2.yaml).

The trainer forms the options' advantages from rewards (and sequence log-likelihoods) gathered over the
global batch, then keeps its own rank's rows. With 12 rows per rank and groups of 8 completions, the second
group of every generation batch has 4 rows on each rank, so a gather or slice in the wrong order gives
wrong advantages that no single-process test sees. tests/train/record_exploration.py records, per rank,
the rows the rank itself scored (before any gather) and the advantages it trained with; the global batch is
rebuilt here from rank 0's rows then rank 1's, and checked against train/exploration.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from launching import launch

from train.checkpoints import final_is_complete
from train.config import LeashGRPOConfig
from train.exploration import exploration_advantages, unlikeliness_rewards
from train.prorl import uniform_groups, weighted_rewards

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "train" / "countdown_tiny.yaml"
RECORDER = Path(__file__).with_name("record_exploration.py")
RANK_TIMEOUT = 120  # s: --ddp_timeout, so a stuck cross-rank wait fails well inside launching.LAUNCH_TIMEOUT
PER_RANK, GROUP = 12, 8  # P rows per rank, G completions per prompt
# the group split across the ranks: global rows 8..15 of each generation batch
STRADDLING = slice(PER_RANK // GROUP * GROUP, (PER_RANK // GROUP + 1) * GROUP)
STEPS = 3
# Easy problems (3 numbers, targets 1..30, as conftest's probe set) so groups hold correct and wrong answers.
TRAIN_TASK = {"num_problems": 300, "seed": 7, "unique_problems": False, "min_numbers": 3, "max_numbers": 3,
              "min_target": 1, "max_target": 30}  # fmt: skip
OPTIONS = {
    "pass_at_k": {"advantage": "pass_at_k", "pass_k": 2},
    "w_reinforce": {"advantage": "w_reinforce", "w_reinforce_lambda": 0.1, "scale_rewards": "none"},
    "unlikeliness": {"unlikeliness_beta": 0.25},
}
# what the recipe leaves these at: the config's defaults (the recipe sets none of them)
DEFAULTS = {
    field.name: field.default
    for field in dataclasses.fields(LeashGRPOConfig)
    if field.name in ("advantage", "scale_rewards", "pass_k", "w_reinforce_lambda", "unlikeliness_beta")
}


def records(out_dir: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (out_dir / f"rank-{rank}.jsonl").read_text().splitlines()]


def train_args(option: str, tiny_base: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "--config", str(RECIPE), "--model_name_or_path", str(tiny_base),
        "--output_dir", str(run_dir), "--probe_recipe", "", "--probe_steps", "0",
        "--save_strategy", "no", "--logging_steps", "1",
        "--per_device_train_batch_size", str(PER_RANK), "--num_generations", str(GROUP),
        "--max_completion_length", "16", "--temperature", "0.5",  # more correct answers than at 1.0
        "--report_to", "none", "--train_task", json.dumps(TRAIN_TASK),
        "--ddp_timeout", str(RANK_TIMEOUT), *[f"--{key}={value}" for key, value in OPTIONS[option].items()],
        *extra,
    ]  # fmt: skip


def check_batches(by_rank: list[list[dict]], settings: dict) -> tuple[int, int]:
    """Every recorded generation batch: the ranks' advantages are train/exploration.py's of the global batch
    rebuilt from their own rows, rank 0's rows then rank 1's. Returns (batches whose straddling group had
    correct and wrong answers, batches whose correct answers the unlikeliness reward re-ranked)."""
    straddling_informative = reshaped = 0
    for rank0, rank1 in zip(*by_rank, strict=True):
        assert (rank0["rank"], rank1["rank"], rank0["ranks"], rank0["step"]) == (0, 1, 2, rank1["step"])
        assert rank0["num_generations"] == GROUP
        # the global batch, rebuilt from each rank's own rows: rank 0's, then rank 1's
        prompts = rank0["prompt_ids"] + rank1["prompt_ids"]
        assert len(prompts) == 2 * PER_RANK
        groups = [prompts[i : i + GROUP] for i in range(0, len(prompts), GROUP)]
        assert all(all(p == group[0] for p in group) for group in groups)  # runs of G rows share a prompt
        per_func = torch.tensor(rank0["local_rewards_per_func"] + rank1["local_rewards_per_func"])
        for record in (rank0, rank1):  # what the gather gave each rank is that same batch, in that order
            assert torch.equal(torch.tensor(record["gathered_rewards_per_func"]), per_func)
        rewards = weighted_rewards(per_func, torch.tensor(rank0["reward_weights"]))  # (2P,)
        logps = None
        if settings["unlikeliness_beta"]:
            logps = torch.tensor(rank0["local_sequence_logps"] + rank1["local_sequence_logps"])  # (2P,)
            for record in (rank0, rank1):
                assert torch.equal(torch.tensor(record["gathered_sequence_logps"]), logps)
        else:
            assert "local_sequence_logps" not in rank0
        expected = exploration_advantages(rewards, GROUP, sequence_logps=logps, **settings)  # (2P,)

        used = [torch.tensor(rank0["advantages"]), torch.tensor(rank1["advantages"])]
        assert [len(u) for u in used] == [PER_RANK, PER_RANK]
        # rows [0, P) and [P, 2P): together the whole batch, each row used by exactly one rank
        assert torch.equal(used[0], expected[:PER_RANK]), (used[0], expected)
        assert torch.equal(used[1], expected[PER_RANK:]), (used[1], expected)

        straddling_informative += not uniform_groups(rewards[STRADDLING], GROUP).item()
        if logps is not None:
            ranked = unlikeliness_rewards(rewards, logps, GROUP, settings["unlikeliness_beta"])
            reshaped += not torch.equal(ranked, rewards)
    return straddling_informative, reshaped


@pytest.mark.parametrize("option", OPTIONS)
def test_each_rank_trains_with_its_slice_of_the_global_batchs_advantages(option, tiny_base, tmp_path):
    settings = DEFAULTS | OPTIONS[option]
    out_dir = tmp_path / "records"
    out_dir.mkdir()
    args = train_args(option, tiny_base, tmp_path / "run", "--max_steps", str(STEPS))
    result = launch("cpu2.yaml", str(out_dir), *args, script=(str(RECORDER),))
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(re.findall(r"train INFO: process (\d+ of \d+)", result.stderr)) == {"0 of 2", "1 of 2"}

    by_rank = [records(out_dir, 0), records(out_dir, 1)]
    assert [len(r) for r in by_rank] == [STEPS, STEPS]  # one generation batch per optimizer step
    straddling_informative, reshaped = check_batches(by_rank, settings)
    # the check means something: in some batch the group split across the ranks had both correct and
    # wrong answers, so its advantages depend on rows of both ranks
    assert straddling_informative >= 1
    if settings["unlikeliness_beta"]:  # and some group's correct answers were ranked by their likelihood
        assert reshaped >= 1


@pytest.mark.deepspeed
def test_unlikeliness_under_zero3_resumes_from_its_checkpoint_with_the_right_advantages(tiny_base, tmp_path):
    """The option that needs a forward of its own (sequence log-likelihoods) under ZeRO-3 on 2 CPU ranks:
    2 steps with a checkpoint at 2, then resumed from it to step 3; every batch of both launches has the
    advantages of its global batch, and the resumed launch starts at step 2."""
    settings = DEFAULTS | OPTIONS["unlikeliness"]
    run_dir, first_out, second_out = tmp_path / "run", tmp_path / "first", tmp_path / "second"
    checkpoints = ("--save_strategy", "steps", "--save_steps", "2")  # the later value wins over "no"
    for out_dir, steps in ((first_out, 2), (second_out, 3)):
        out_dir.mkdir()
        args = train_args("unlikeliness", tiny_base, run_dir, "--max_steps", str(steps), *checkpoints)
        result = launch("zero3_cpu.yaml", str(out_dir), *args, script=(str(RECORDER),))
        assert result.returncode == 0, result.stderr[-3000:]
        started = set(re.findall(r"train INFO: process (\d+ of \d+ \([^)]*\))", result.stderr))
        assert started == {"0 of 2 (DEEPSPEED, ZeRO-3)", "1 of 2 (DEEPSPEED, ZeRO-3)"}
    assert re.search(r"resuming \S+ from \S+checkpoint-2 \(step 2\)", result.stderr), result.stderr[-3000:]
    first = [records(first_out, 0), records(first_out, 1)]
    second = [records(second_out, 0), records(second_out, 1)]
    assert [[r["step"] for r in rank] for rank in first] == [[0, 1], [0, 1]]
    assert [[r["step"] for r in rank] for rank in second] == [[2], [2]]
    counts = [check_batches(by_rank, settings) for by_rank in (first, second)]
    assert sum(c[0] for c in counts) >= 1 and sum(c[1] for c in counts) >= 1
    assert final_is_complete(run_dir, 3)
