"""Exploration options' maths against hand-worked groups (values worked out on paper, written here), and
the pass@k advantage against brute-force enumeration of k-subsets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from train.exploration import (
    exploration_advantages,
    grpo_advantages,
    pass_at_k_advantages,
    unlikeliness_ranks,
    unlikeliness_rewards,
    w_reinforce_advantages,
)

NAN = math.nan


def close(actual: torch.Tensor, expected: list[float]) -> None:
    np.testing.assert_allclose(actual.double().numpy(), np.array(expected), rtol=1e-6, atol=1e-12)


# --- pass@k advantage (Chen et al. 2025)


def test_pass_at_k_advantage_hand_worked_groups_of_four_at_k_2():
    rewards = torch.tensor(
        [1.0, 0, 0, 0]  # c = 1: rho = 1 - C(3,2)/C(4,2) = 1/2, sigma = 1/2; A+ = 1, A- = (1/2 - 2/3)/(1/2)
        + [1.0, 1, 0, 0]  # c = 2: rho = 5/6, sigma = sqrt(5)/6; A+ = (1/6)/sigma, A- = (1/6 - 1/3)/sigma
        + [1.0, 1, 1, 0]  # c = 3: N - c = 1 < k, every pair holds a correct sample: rho = 1, sigma = 0
        + [0.0, 0, 0, 0]  # uniform
        + [1.0, 1, 1, 1]  # uniform
    )
    advantages = pass_at_k_advantages(rewards, num_generations=4, k=2)
    s5 = 1 / math.sqrt(5)
    close(advantages, [1, -1 / 3, -1 / 3, -1 / 3, s5, s5, -s5, -s5] + [0] * 12)


def test_pass_at_k_advantage_without_std_scaling_keeps_the_raw_differences():
    # c = 1 of 4, k = 2: A+ = 1 - rho = 1/2, A- = 1 - rho - C(2,1)/C(3,1) = 1/2 - 2/3 = -1/6
    advantages = pass_at_k_advantages(torch.tensor([0.0, 1, 0, 0]), 4, k=2, scale_rewards="none")
    close(advantages, [-1 / 6, 1 / 2, -1 / 6, -1 / 6])


def test_pass_at_k_advantage_leaves_unscorable_rows_out_of_the_group():
    # scorable N = 3, c = 1, k = 2: rho = 1 - C(2,2)/C(3,2) = 2/3, sigma = sqrt(2)/3;
    # A+ = (1/3)/sigma = 1/sqrt(2); A- = (1/3 - C(1,1)/C(2,1))/sigma = -1/(2 sqrt(2)); the NaN row: 0
    advantages = pass_at_k_advantages(torch.tensor([1.0, NAN, 0, 0]), 4, k=2)
    close(advantages, [1 / math.sqrt(2), 0, -1 / (2 * math.sqrt(2)), -1 / (2 * math.sqrt(2))])


def test_pass_at_1_advantage_is_grpo_with_the_population_std():
    # c = 1 of 4: rho = 1/4, sigma = sqrt(3)/4; A+ = (3/4)/sigma = sqrt(3), A- = -(1/4)/sigma = -1/sqrt(3)
    advantages = pass_at_k_advantages(torch.tensor([1.0, 0, 0, 0]), 4, k=1)
    close(advantages, [math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3), -1 / math.sqrt(3)])


def _brute_force_pass_at_k_advantages(group: list[float], k: int) -> list[float]:
    """Chen et al.'s definition read literally: the reward of a k-subset is its max; a sample's advantage is
    the mean reward of the subsets holding it minus the mean over all subsets, over their std."""
    subsets = list(itertools.combinations(range(len(group)), k))
    reward = {s: max(group[i] for i in s) for s in subsets}
    mean = np.mean(list(reward.values()))
    std = np.std(list(reward.values()))
    if std == 0:
        return [0.0] * len(group)
    return [(np.mean([reward[s] for s in subsets if i in s]) - mean) / std for i in range(len(group))]


@pytest.mark.parametrize("size,k", [(4, 2), (6, 3), (8, 4), (8, 1), (5, 5)])
def test_pass_at_k_advantage_equals_enumerating_every_k_subset(size, k):
    rng = np.random.default_rng(size * 10 + k)
    groups = [rng.integers(0, 2, size).astype(float).tolist() for _ in range(12)]
    advantages = pass_at_k_advantages(torch.tensor(sum(groups, [])), size, k=k)
    expected = sum((_brute_force_pass_at_k_advantages(g, k) for g in groups), [])
    np.testing.assert_allclose(advantages.double().numpy(), expected, rtol=1e-6, atol=1e-9)


def test_pass_at_k_advantage_refuses_non_binary_rewards_and_batch_scaling():
    with pytest.raises(ValueError, match="binary"):
        pass_at_k_advantages(torch.tensor([1.0, 0.5, 0, 0]), 4, k=2)
    with pytest.raises(ValueError, match="scale_rewards"):
        pass_at_k_advantages(torch.tensor([1.0, 0, 0, 0]), 4, k=2, scale_rewards="batch")


# --- W-REINFORCE (Zhu et al. 2025)


def test_w_reinforce_scales_positive_samples_and_keeps_negative_ones():
    # REINFORCE on +1 / -1 with no baseline: correct lambda * (+1), wrong -1, unscorable 0
    advantages = w_reinforce_advantages(torch.tensor([1.0, 0, NAN, 1, 0, 0, 0, 0]), lam=0.1)
    close(advantages, [0.1, -1, 0, 0.1, -1, -1, -1, -1])


# --- unlikeliness reward (He et al. 2025)


def test_unlikeliness_penalises_the_most_likely_correct_sample_most():
    # correct rows 0, 2, 3 with log-likelihoods -2, -5, -0.5: ranks 1, 0, 2 (least likely 0);
    # G = 4, beta = 1/4: rewards 1 - 1/4 * 1/4 = 0.9375, 1 - 0 = 1, 1 - 1/4 * 2/4 = 0.875; wrong row stays 0
    rewards = torch.tensor([1.0, 0, 1, 1])
    logps = torch.tensor([-2.0, -1.0, -5.0, -0.5])
    close(unlikeliness_rewards(rewards, logps, 4, beta=0.25), [0.9375, 0, 1, 0.875])


def test_unlikeliness_ties_share_the_lower_rank_and_wrong_samples_do_not_count():
    correct = torch.tensor([[True, True, True, False]])
    logps = torch.tensor([[-3.0, -3.0, -1.0, -9.0]])  # the wrong sample is the least likely
    assert unlikeliness_ranks(correct, logps).tolist() == [[0, 0, 2, 0]]


def test_unlikeliness_then_grpo_advantage_by_hand():
    # rewards after unlikeliness (above): 0.9375, 0, 1, 0.875; mean 0.703125; deviations
    # 0.234375, -0.703125, 0.296875, 0.171875; Bessel variance 0.6669921875 / 3, std 0.47152...
    rewards = torch.tensor([1.0, 0, 1, 1], dtype=torch.float64)
    logps = torch.tensor([-2.0, -1.0, -5.0, -0.5])
    advantages = exploration_advantages(
        rewards,
        4,
        advantage="grpo",
        scale_rewards="group",
        pass_k=1,
        w_reinforce_lambda=0.1,
        unlikeliness_beta=0.25,
        sequence_logps=logps,
    )
    std = math.sqrt(0.6669921875 / 3) + 1e-4
    close(advantages, [0.234375 / std, -0.703125 / std, 0.296875 / std, 0.171875 / std])


# --- TRL's advantage, as reproduced for the unlikeliness reward


def test_grpo_advantage_by_hand_for_each_scaling():
    # group 1: 1 0 0 0 (mean 1/4, Bessel std 1/2); group 2: all 1 (std 0); unscorable row -> 0
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, NAN], dtype=torch.float64)
    close(
        grpo_advantages(rewards, 4, "group"),
        [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, 0, 0, 0, 0],
    )
    close(grpo_advantages(rewards, 4, "none"), [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0])
    # batch: the 7 scorable rewards have mean 4/7 and Bessel variance (4 * (3/7)^2 + 3 * (4/7)^2) / 6 = 2/7
    batch_std = math.sqrt(2 / 7) + 1e-4
    close(
        grpo_advantages(rewards, 4, "batch"),
        [0.75 / batch_std, -0.25 / batch_std, -0.25 / batch_std, -0.25 / batch_std, 0, 0, 0, 0],
    )


def test_exploration_advantages_dispatch_and_refusals():
    rewards = torch.tensor([1.0, 0, 0, 0])
    settings = dict(scale_rewards="group", pass_k=2, w_reinforce_lambda=0.1, unlikeliness_beta=0.0)
    close(exploration_advantages(rewards, 4, advantage="pass_at_k", **settings), [1, -1 / 3, -1 / 3, -1 / 3])
    close(exploration_advantages(rewards, 4, advantage="w_reinforce", **settings), [0.1, -1, -1, -1])
    with pytest.raises(ValueError, match="not one of"):
        exploration_advantages(rewards, 4, advantage="ppo", **settings)
    with pytest.raises(ValueError, match="log-likelihoods"):
        exploration_advantages(rewards, 4, advantage="grpo", **{**settings, "unlikeliness_beta": 0.25})


# --- in the trainer


def _alternating(prompts, completions, problem_id, **kwargs):
    """Problem 0: every completion correct (a uniform group); others: alternating 0/1."""
    return [1.0 if p == "0" else float(i % 2) for i, p in enumerate(problem_id)]


def _scored_batch(model_dir, tmp_path, **overrides):
    """A LeashGRPOTrainer's scored generation batch of two groups of 4 (problems 0 and 1), and the trainer."""
    from datasets import Dataset
    from tiny_trainer import tiny_trainer

    dataset = Dataset.from_dict({"prompt": ["0=:", "1=:"], "problem_id": ["0", "1"]})
    trainer = tiny_trainer(model_dir, tmp_path, _alternating, dataset, **overrides)
    inputs = [{"prompt": f"{p}=:", "problem_id": str(p)} for p in (0, 1) for _ in range(4)]
    trainer.model.train()
    torch.manual_seed(0)
    return trainer._generate_and_score_completions(inputs), trainer


def test_reproduced_grpo_advantage_equals_trls_own(tiny_random_model, tmp_path):
    # with no option on the trainer keeps TRL's advantages; the reproduction used under the unlikeliness
    # reward must give the same numbers for each scale_rewards
    for scale in ("group", "batch", "none"):
        out, trainer = _scored_batch(tiny_random_model, tmp_path, scale_rewards=scale)
        rewards = trainer._last_rewards_per_func[:, 0]
        assert rewards.tolist() == [1, 1, 1, 1, 0, 1, 0, 1]
        torch.testing.assert_close(out["advantages"], grpo_advantages(rewards, 4, scale), rtol=1e-6, atol=0)


def test_trainer_uses_the_pass_at_k_advantage(tiny_random_model, tmp_path):
    out, _ = _scored_batch(tiny_random_model, tmp_path, advantage="pass_at_k", pass_k=2)
    # group 0 uniform: 0; group 1 (0 1 0 1): c = 2 of 4 at k = 2, A+ = 1/sqrt(5), A- = -1/sqrt(5)
    s5 = 1 / math.sqrt(5)
    close(out["advantages"], [0, 0, 0, 0, -s5, s5, -s5, s5])


def test_trainer_uses_w_reinforce(tiny_random_model, tmp_path):
    out, _ = _scored_batch(
        tiny_random_model, tmp_path, advantage="w_reinforce", w_reinforce_lambda=0.1, scale_rewards="none"
    )
    close(out["advantages"], [0.1, 0.1, 0.1, 0.1, -1, 0.1, -1, 0.1])


def test_trainer_ranks_unlikeliness_by_the_sampling_policys_sequence_likelihood(tiny_random_model, tmp_path):
    out, trainer = _scored_batch(tiny_random_model, tmp_path, unlikeliness_beta=0.25, temperature=0.7)
    # independent recomputation: one forward, logits / T, log-softmax, the sampled tokens summed over the mask
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=mask).logits[:, :-1] / 0.7
    token_logps = torch.log_softmax(logits.double(), dim=-1).gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)
    width = out["completion_ids"].size(1)
    sequence_logps = (token_logps[:, -width:] * out["completion_mask"]).sum(dim=1)  # (rows,)
    rewards = trainer._last_rewards_per_func[:, 0]
    expected = grpo_advantages(unlikeliness_rewards(rewards, sequence_logps, 4, 0.25), 4, "group")
    torch.testing.assert_close(out["advantages"], expected.float(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(out["advantages"][:4], torch.zeros(4)), "the all-correct group got no signal"
