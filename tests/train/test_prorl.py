"""ProRL pieces: uniform-group detection, row merging, reference reset, dynamic sampling in the trainer."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from tiny_trainer import tiny_trainer

from train.prorl import (
    LeashGRPOTrainer,
    ReferenceResetCallback,
    clear_optimizer_state,
    take_rows,
    uniform_groups,
    weighted_rewards,
)

NAN = math.nan


# --- pure pieces


def test_uniform_groups_are_those_with_one_reward_value():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5])  # groups of 3
    assert uniform_groups(rewards, 3).tolist() == [True, False, True]


def test_uniform_groups_ignore_unscorable_rows():
    # (1, NaN, 1): the scorable rewards agree; (NaN, NaN, 0): one scorable reward; (0, NaN, 1): differ
    rewards = torch.tensor([1.0, NAN, 1.0, NAN, NAN, 0.0, 0.0, NAN, 1.0])
    assert uniform_groups(rewards, 3).tolist() == [True, True, False]


def test_weighted_rewards_sum_functions_and_keep_unscorable_rows_nan():
    rewards_per_func = torch.tensor([[1.0, 0.5], [NAN, 1.0], [NAN, NAN]])  # (rows, funcs)
    total = weighted_rewards(rewards_per_func, torch.tensor([2.0, 1.0]))
    assert total[:2].tolist() == [2.5, 1.0]
    assert math.isnan(total[2].item())


def test_take_rows_repads_prompts_left_and_completions_right():
    first = {
        "prompt_ids": torch.tensor([[0, 5], [6, 7]]),
        "prompt_mask": torch.tensor([[0, 1], [1, 1]]),
        "completion_ids": torch.tensor([[8, 0], [9, 9]]),
        "completion_mask": torch.tensor([[1, 0], [1, 1]]),
        "advantages": torch.tensor([0.5, -0.5]),
        "num_items_in_batch": torch.tensor(3),
    }
    second = {
        "prompt_ids": torch.tensor([[1, 2, 3]]),
        "prompt_mask": torch.tensor([[1, 1, 1]]),
        "completion_ids": torch.tensor([[4]]),
        "completion_mask": torch.tensor([[1]]),
        "advantages": torch.tensor([2.0]),
        "num_items_in_batch": torch.tensor(1),
    }
    out = take_rows([first, second], [(1, 0), (0, 0)], pad_token_id=0)
    assert out["prompt_ids"].tolist() == [[1, 2, 3], [0, 0, 5]]
    assert out["prompt_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert out["completion_ids"].tolist() == [[4, 0], [8, 0]]
    assert out["completion_mask"].tolist() == [[1, 0], [1, 0]]
    assert out["advantages"].tolist() == [2.0, 0.5]
    assert "num_items_in_batch" not in out  # recomputed by the caller from the final masks


def test_take_rows_refuses_keys_it_cannot_pad():
    batch = {"pixel_values": torch.zeros(1, 3), "advantages": torch.zeros(1)}
    with pytest.raises(NotImplementedError, match="pixel_values"):
        take_rows([batch], [(0, 0)], pad_token_id=0)


def test_clear_optimizer_state_reaches_through_wrappers():
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.ones(2)
    optimizer.step()

    class Wrapper:  # like accelerate's AcceleratedOptimizer
        def __init__(self, inner):
            self.optimizer = inner

    assert optimizer.state
    clear_optimizer_state(Wrapper(optimizer))
    assert not optimizer.state


# --- in the trainer


def _even_uniform_odd_mixed(prompts, completions, problem_id, **kwargs):
    """Even problems: reward 1 for every completion (a uniform group); odd: alternating 0/1."""
    return [1.0 if int(p) % 2 == 0 else float(i % 2) for i, p in enumerate(problem_id)]


def _trainer(model_dir, tmp_path, **overrides) -> LeashGRPOTrainer:
    dataset = Dataset.from_dict(
        {"prompt": [f"{i}=:" for i in range(8)], "problem_id": [str(i) for i in range(8)]}
    )
    settings = {"learning_rate": 1e-3, "logging_steps": 1, **overrides}
    return tiny_trainer(model_dir, tmp_path, _even_uniform_odd_mixed, dataset, **settings)


def test_dynamic_sampling_masks_exactly_the_uniform_groups(tiny_random_model, tmp_path):
    trainer = _trainer(tiny_random_model, tmp_path, dynamic_sampling=True)
    inputs = [{"prompt": f"{p}=:", "problem_id": str(p)} for p in (0, 1) for _ in range(4)]  # two groups
    trainer.model.train()
    out = trainer._generate_and_score_completions(inputs)
    kept = out["completion_mask"].sum(dim=1) > 0  # (rows,)
    assert kept.tolist() == [False] * 4 + [True] * 4
    assert int(out["num_items_in_batch"]) == int(out["completion_mask"].sum())
    assert trainer._metrics["train"]["prorl/dynamic_sampling/dropped_fraction"] == [0.5]


def test_dynamic_sampling_refill_replaces_uniform_groups(tiny_random_model, tmp_path):
    trainer = _trainer(tiny_random_model, tmp_path, dynamic_sampling=True, dynamic_sampling_max_tries=8)
    inputs = [{"prompt": f"{p}=:", "problem_id": str(p)} for p in (0, 2) for _ in range(4)]  # both uniform
    trainer.model.train()
    out = trainer._generate_and_score_completions(inputs)
    # each refill round draws 2 seeded random problems of 8; the odd ones are informative
    assert (out["completion_mask"].sum(dim=1) > 0).all()
    assert out["prompt_ids"].shape[0] == 8
    assert trainer._metrics["train"]["prorl/dynamic_sampling/dropped_fraction"] == [1.0]
    assert trainer._metrics["train"]["prorl/dynamic_sampling/masked_fraction"] == [0.0]


def test_reference_reset_copies_policy_and_empties_optimizer(tiny_random_model, tmp_path):
    trainer = _trainer(tiny_random_model, tmp_path, beta=0.04, ref_reset_steps=1)
    trainer.add_callback(ReferenceResetCallback(trainer))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    policy, reference = trainer.model.state_dict(), trainer.ref_model.state_dict()
    assert any(not torch.equal(before[k], policy[k]) for k in policy), "the policy did not move"
    for key in policy:
        assert torch.equal(policy[key], reference[key]), key
    inner = trainer.optimizer
    while hasattr(inner, "optimizer"):
        inner = inner.optimizer
    assert not inner.state
    assert [h.get("prorl/ref_reset") for h in trainer.state.log_history if "loss" in h] == [1.0]
