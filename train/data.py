"""Training data: task problems -> a `datasets.Dataset` of {"prompt", "problem_id", "fields", "domain"}.

TRL hands every column but "prompt" to the reward functions as keyword lists, so the verifier
inputs travel with each prompt (`fields` as a JSON string: Arrow needs one type per column) and so
does the domain whose task judges it. A mixture of domains (`train_tasks`) is made by `mixture`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence

from datasets import Dataset

from probe.cli import ConfigError
from probe.tasks import TaskConfig, countdown_key, make_task


def problems_dataset(problems: Sequence, conversational: bool = False) -> Dataset:
    """One row per problem: prompt, problem_id (str), fields (str, JSON).

    conversational (prompt_format "chat"): the prompt is one user message, so TRL applies the
    tokenizer's chat template, as the probe does; otherwise the bare prompt text (compact format).
    """
    if not problems:
        raise ConfigError("train_task: the task produced no training problems")
    return Dataset.from_dict(
        {
            "prompt": [
                [{"role": "user", "content": p.prompt}] if conversational else p.prompt for p in problems
            ],
            "problem_id": [p.problem_id for p in problems],
            "fields": [json.dumps(p.fields, sort_keys=True) for p in problems],
            "domain": [p.domain for p in problems],
        }
    )


def mixture(problems: Sequence, weights: Mapping[str, float]) -> list:
    """The training rows of a mixture: N = len(problems) rows, domain d's share w_d / sum(w) of them
    (largest remainders, so the shares sum to N), filled with d's problems in their order, cycled
    when the share is larger than d has and cut when smaller. TRL's sampler shuffles the rows, so a
    prompt is drawn from domain d with probability about w_d / sum(w)."""
    by_domain: dict[str, list] = {domain: [] for domain in weights}
    for problem in problems:
        by_domain[problem.domain].append(problem)
    empty = [domain for domain, rows in by_domain.items() if not rows]
    if empty:
        raise ConfigError(f"train_tasks: no training problems left in domain(s) {empty}")
    total, weight_sum = len(problems), sum(weights.values())
    exact = {domain: total * weight / weight_sum for domain, weight in weights.items()}
    shares = {domain: math.floor(value) for domain, value in exact.items()}
    by_remainder = sorted(weights, key=lambda d: (shares[d] - exact[d], list(weights).index(d)))
    for domain in by_remainder[: total - sum(shares.values())]:
        shares[domain] += 1
    rows = []
    for domain, share in shares.items():
        pool = by_domain[domain]
        rows.extend(pool[i % len(pool)] for i in range(share))
    return rows


def overlap_keys(problem) -> set:
    """Keys under which two problems count as the same: the id, the whitespace-normalised prompt,
    and for countdown the order-free (numbers, target) key (a reshuffled problem still counts)."""
    keys: set = {("id", problem.problem_id), ("prompt", " ".join(problem.prompt.split()))}
    fields = problem.fields
    if "numbers" in fields and "target" in fields:
        keys.add(("countdown", countdown_key(fields["numbers"], fields["target"])))
    return keys


def without_probe_problems(train_problems: Sequence, probe_problems: Sequence) -> list:
    """The training problems that share no overlap key with any probe problem."""
    probe_keys = set().union(*(overlap_keys(p) for p in probe_problems)) if probe_problems else set()
    return [p for p in train_problems if not overlap_keys(p) & probe_keys]


def check_no_overlap(train_problems: Sequence, probe_problems: Sequence) -> None:
    """Refuse probe problems that are also training prompts: a probe must measure held-out problems."""
    seen = set().union(*(overlap_keys(p) for p in train_problems)) if train_problems else set()
    shared = [p.problem_id for p in probe_problems if overlap_keys(p) & seen]
    if shared:
        raise ConfigError(
            f"probe problems overlap training prompts: {len(shared)} of {len(probe_problems)} "
            f"(e.g. {shared[:3]}); give train_task and the probe recipe disjoint ranges, "
            "or set holdout_probe_problems: true"
        )


def first_problems(task_config: TaskConfig, count: int, every_problem: Sequence):
    """(task, problems) of the probe set's first `count` problems, the task's own config saying
    num_problems = count (so a probe dir's identity names the set it holds); refused unless they are the
    first `count` of `every_problem` (a task that samples its set by seed may draw another one)."""
    task = make_task(dataclasses.replace(task_config, num_problems=count))
    problems = task.problems()
    if [p.problem_id for p in problems] != [p.problem_id for p in every_problem[:count]]:
        task.close()
        raise ConfigError(
            f"probe_num_problems={count}: {task_config.task}'s first {count} problems are not the first "
            f"{count} of its {len(every_problem)}-problem set; probe the whole set (probe_num_problems: null)"
        )
    return task, problems
