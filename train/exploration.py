"""Exploration options: advantages and rewards that take the place of GRPO's where a recipe asks.

Pure functions on torch tensors. Rows are grouped as TRL groups them: consecutive runs of
G = `num_generations` completions of one prompt. A reward of NaN marks an unscorable completion (every
reward function returned None); it gets advantage 0 and is left out of its group's statistics, as in TRL.
The correctness reward is binary (1 correct, 0 not); the options that need it say so and refuse others.

- `grpo_advantages`: TRL 1.16's own advantage (`multi_objective_aggregation: sum_then_normalize`),
  A_i = r_i - mean_g(r) divided by std + 1e-4 (Bessel-corrected std over the group for
  `scale_rewards: group`, over the whole batch for `batch`, no division for `none`). The unlikeliness
  reward uses it on its reshaped rewards; with no option on, TRL's advantages are left untouched.
- `pass_at_k_advantages` (Chen et al. 2025, arXiv 2508.10751, "Pass@k Training"): the analytic advantage
  of the reward "some sample of a k-subset of the group is correct". In a group of N scorable samples with
  c correct, rho = 1 - C(N-c, k) / C(N, k) (the group's pass@k), sigma = sqrt(rho (1 - rho));
  A+ = (1 - rho) / sigma for a correct sample, A- = (1 - rho - C(N-c-1, k-1) / C(N-1, k-1)) / sigma for a
  wrong one; 0 when sigma = 0 (c = 0, or N - c < k so every k-subset holds a correct sample).
  `scale_rewards: none` drops the division by sigma. k = 1 gives GRPO's advantage with the population std.
- `w_reinforce_advantages` (Zhu et al. 2025, arXiv 2506.01347, "The Surprising Effectiveness of Negative
  Reinforcement"): W-REINFORCE = lambda * PSR + NSR, REINFORCE on rewards +1 / -1 with no baseline and no
  std scaling: A = lambda for a correct sample, -1 for a wrong one (lambda = 0.1 in the paper).
- `unlikeliness_rewards` (He et al. 2025, arXiv 2506.02355, "Rewarding the Unlikely"): among a group's
  correct samples, rank each by its sequence log-likelihood under the sampling policy, least likely
  rank 0 (ties share the lower rank), and scale its reward by 1 - beta * rank / G, so the most likely
  correct sample is penalised most (beta = 0.25 in the paper). Wrong samples keep 0. GRPO's advantage is
  then formed from these rewards. (The authors' code ranks all G samples by mean token log-prob; we rank
  the correct ones by the sequence's total log-likelihood, as the issue specifies.)
"""

from __future__ import annotations

import numpy as np
import torch
from trl.trainer.utils import nanstd

from probe.metrics import pass_at_k

ADVANTAGES = ("grpo", "pass_at_k", "w_reinforce")
SCALE_REWARDS = ("group", "batch", "none")
STD_EPSILON = 1e-4  # TRL's guard in (r - mean) / (std + 1e-4)


def check_binary(rewards: torch.Tensor, option: str) -> None:
    """Raise ValueError naming `option` unless every scorable reward is exactly 0 or 1."""
    scorable = rewards[~torch.isnan(rewards)]  # (scorable rows,)
    bad = scorable[(scorable != 0) & (scorable != 1)]
    if bad.numel():
        raise ValueError(
            f"{option} needs a binary correctness reward (0 or 1), got {bad[0].item()!r}: "
            "turn off other reward terms (format_reward_weight, reward_weights)"
        )


def grpo_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    """(rows,) rewards, NaN = unscorable -> (rows,) TRL 1.16's group-relative advantages (NaN rows 0)."""
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"scale_rewards: {scale_rewards!r} is not one of {SCALE_REWARDS}")
    grouped = rewards.view(-1, num_generations)  # (groups, G)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)  # (groups, 1)
    advantages = grouped - mean  # (groups, G)
    if scale_rewards == "group":
        advantages = advantages / (nanstd(grouped, dim=1, keepdim=True) + STD_EPSILON)
    elif scale_rewards == "batch":
        advantages = advantages / (nanstd(rewards) + STD_EPSILON)
    return torch.nan_to_num(advantages.reshape(-1), nan=0.0)


def pass_at_k_advantages(
    rewards: torch.Tensor, num_generations: int, k: int, scale_rewards: str = "group"
) -> torch.Tensor:
    """(rows,) binary rewards, NaN = unscorable -> (rows,) pass@k advantages (Chen et al. 2025).

    N and c count a group's scorable samples; a group with fewer than k scorable samples gets 0.
    `scale_rewards`: "group" divides by sigma (the paper's form), "none" does not.
    """
    if scale_rewards not in ("group", "none"):
        raise ValueError(f"pass@k advantage: scale_rewards must be 'group' or 'none', got {scale_rewards!r}")
    if k < 1:
        raise ValueError(f"pass@k advantage: k must be >= 1, got {k}")
    check_binary(rewards, "the pass@k advantage")
    grouped = rewards.view(-1, num_generations).double()  # (groups, G)
    scorable = ~torch.isnan(grouped)  # (groups, G)
    correct = grouped == 1  # (groups, G)
    n = scorable.sum(dim=1).numpy()  # (groups,)
    c = correct.sum(dim=1).numpy()  # (groups,)
    rho = np.zeros(len(n))  # (groups,) the group's pass@k
    miss_given_wrong = np.ones(len(n))  # (groups,) C(N-c-1, k-1) / C(N-1, k-1)
    usable = n >= k
    if usable.any():
        rho[usable] = pass_at_k(n[usable], c[usable], k)
        has_wrong = usable & (c < n)
        if k > 1 and has_wrong.any():  # k = 1: C(N-c-1, 0) / C(N-1, 0) = 1
            miss_given_wrong[has_wrong] = 1.0 - pass_at_k(n[has_wrong] - 1, c[has_wrong], k - 1)
    sigma = np.sqrt(rho * (1.0 - rho))  # (groups,)
    positive = 1.0 - rho  # (groups,)
    negative = 1.0 - rho - miss_given_wrong  # (groups,)
    informative = usable & (sigma > 0)
    if scale_rewards == "group":
        positive = np.divide(positive, sigma, out=np.zeros_like(positive), where=informative)
        negative = np.divide(negative, sigma, out=np.zeros_like(negative), where=informative)
    positive = np.where(informative, positive, 0.0)
    negative = np.where(informative, negative, 0.0)
    advantages = torch.where(
        correct, torch.from_numpy(positive).unsqueeze(1), torch.from_numpy(negative).unsqueeze(1)
    )  # (groups, G)
    advantages = advantages.masked_fill(~scorable, 0.0)
    return advantages.reshape(-1).to(rewards.dtype)


def w_reinforce_advantages(rewards: torch.Tensor, lam: float) -> torch.Tensor:
    """(rows,) binary rewards, NaN = unscorable -> (rows,) W-REINFORCE advantages: lam correct, -1 wrong."""
    check_binary(rewards, "W-REINFORCE")
    advantages = torch.where(rewards == 1, torch.full_like(rewards, lam), torch.full_like(rewards, -1.0))
    return advantages.masked_fill(torch.isnan(rewards), 0.0)  # (rows,)


def unlikeliness_ranks(correct: torch.Tensor, sequence_logps: torch.Tensor) -> torch.Tensor:
    """(groups, G) bool, (groups, G) log-likelihoods -> (groups, G) rank of each correct sample among its
    group's correct samples, least likely 0, ties sharing the lower rank (0 on wrong samples)."""
    lower = sequence_logps.unsqueeze(1) < sequence_logps.unsqueeze(2)  # (groups, G, G): [i, j] = l_j < l_i
    ranks = (lower & correct.unsqueeze(1)).sum(dim=2)  # (groups, G): correct samples less likely than i
    return torch.where(correct, ranks, torch.zeros_like(ranks))


def unlikeliness_rewards(
    rewards: torch.Tensor, sequence_logps: torch.Tensor, num_generations: int, beta: float
) -> torch.Tensor:
    """(rows,) binary rewards (NaN = unscorable), (rows,) sequence log-likelihoods -> (rows,) rewards with
    each correct sample's scaled by 1 - beta * rank / G (He et al. 2025)."""
    check_binary(rewards, "the unlikeliness reward")
    grouped = rewards.view(-1, num_generations)  # (groups, G)
    correct = grouped == 1  # (groups, G)
    ranks = unlikeliness_ranks(correct, sequence_logps.view(-1, num_generations).to(torch.float64))
    scale = 1.0 - beta * ranks.to(rewards.dtype) / num_generations  # (groups, G)
    return torch.where(correct, grouped * scale, grouped).reshape(-1)


def exploration_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    *,
    advantage: str,
    scale_rewards: str,
    pass_k: int,
    w_reinforce_lambda: float,
    unlikeliness_beta: float,
    sequence_logps: torch.Tensor | None = None,
) -> torch.Tensor:
    """(rows,) rewards of a whole generation batch -> (rows,) advantages under the recipe's options.

    `sequence_logps` (rows,) is needed when unlikeliness_beta > 0.
    """
    if unlikeliness_beta:
        if sequence_logps is None:
            raise ValueError("the unlikeliness reward needs the completions' sequence log-likelihoods")
        rewards = unlikeliness_rewards(rewards, sequence_logps, num_generations, unlikeliness_beta)
    if advantage == "pass_at_k":
        return pass_at_k_advantages(rewards, num_generations, pass_k, scale_rewards)
    if advantage == "w_reinforce":
        return w_reinforce_advantages(rewards, w_reinforce_lambda)
    if advantage == "grpo":
        return grpo_advantages(rewards, num_generations, scale_rewards)
    raise ValueError(f"advantage: {advantage!r} is not one of {ADVANTAGES}")
