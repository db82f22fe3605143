"""What the embedded base model learns from (probe.tasks.countdown): every solution of a problem,
problems drawn exactly as reasoning-gym draws them, and SFT examples that hold out the probe set."""

from __future__ import annotations

import random

import pytest

from probe.cli import ConfigError
from probe.tasks import CountdownExample, TaskConfig, countdown, countdown_key, countdown_solutions, make_task

OPERATORS = ["+", "-", "*", "/"]
# The shipped probe set's ranges (configs/probe/countdown_tiny.yaml) and the test suite's tiny ones.
PROBE_RANGES = dict(min_numbers=3, max_numbers=4, min_value=1, max_value=9, min_target=10, max_target=150)
TINY_RANGES = dict(min_numbers=3, max_numbers=3, min_value=1, max_value=9, min_target=1, max_target=30)


# --- every solution


@pytest.mark.parametrize(
    ("numbers", "target", "expected"),
    [
        ([2, 2], 4, ["2*2", "2+2"]),
        ([4, 2], 2, ["4-2", "4/2"]),
        ([4, 2], 8, ["2*4", "4*2"]),
        ([1, 2], 3, ["1+2", "2+1"]),
        ([1, 2], 7, []),
        # 3-(1+2) is written 3-1-2 and 1-(3-2) is 1-3+2: one text per tree, no redundant parentheses
        ([1, 2, 3], 0, ["1+2-3", "1-3+2", "2+1-3", "2-3+1", "3-1-2", "3-2-1"]),
        ([3, 1, 1], 6, ["(1+1)*3", "3*(1+1)"]),
    ],
)
def test_countdown_solutions_are_every_valid_expression_by_hand(numbers, target, expected):
    assert countdown_solutions(numbers, target, OPERATORS) == expected


def test_countdown_solutions_are_correct_and_distinct_for_the_verifier():
    task = make_task(TaskConfig(seed=99, num_problems=10, **TINY_RANGES))
    for problem in task.problems():
        solutions = countdown_solutions(problem.fields["numbers"], problem.fields["target"], OPERATORS)
        verdicts = task.judge_many(problem, solutions)
        assert solutions and all(v.correct for v in verdicts), problem.problem_id
        assert len({v.answer for v in verdicts}) == len(solutions)  # distinct canonical answers


def test_countdown_solutions_division_is_exact_and_never_by_zero():
    # 8/(3-8/3) = 24 needs the fraction 1/3; 5/(1-1) must not appear, (1-1)/5 = 0 must
    assert "8/(3-8/3)" in countdown_solutions([8, 3, 8, 3], 24, OPERATORS)
    assert countdown_solutions([5, 1, 1], 0, ["/", "-"]) == ["(1-1)/5"]
    every = [text for target in range(-10, 11) for text in countdown_solutions([5, 1, 1], target, ["/", "-"])]
    assert "5/(1-1)" not in every


# --- drawing problems


@pytest.mark.parametrize(
    ("ranges", "items", "drawn"),
    [
        (PROBE_RANGES, 150, 150),
        (TINY_RANGES, 150, 150),
        ({**TINY_RANGES, "operators": ["/", "+"]}, 150, 150),
        ({**PROBE_RANGES, "operators": ["/", "-"]}, 10, 0),  # targets out of reach: both give up
    ],
    ids=["probe", "tiny", "division", "gives-up"],
)
def test_sample_problem_draws_exactly_what_reasoning_gym_draws(ranges, items, drawn, monkeypatch):
    """reasoning-gym draws item i from Random(seed + i); the same Random state gives the same problem
    here (or, with reasoning-gym's 100 tries, gives up where it does), so a change on either side
    shows up. The copy exists for speed: no sympy."""
    from reasoning_gym.games.countdown import CountdownConfig, CountdownDataset

    monkeypatch.setattr(countdown, "MAX_DRAWS", 100)  # reasoning-gym's max_attempts
    config = TaskConfig(**ranges)
    dataset = CountdownDataset(
        CountdownConfig(**{**ranges, "operators": tuple(config.operators)}, seed=0, size=items)
    )
    agreed = 0
    for index in range(items):
        try:
            entry = dataset[index]["metadata"]
        except ValueError:  # reasoning-gym gave up on this item
            with pytest.raises(ConfigError):
                countdown.sample_problem(random.Random(index), config)
            continue
        assert countdown.sample_problem(random.Random(index), config) == (entry["numbers"], entry["target"])
        agreed += 1
    assert agreed == drawn


# --- SFT examples


def test_sft_examples_hold_out_every_probe_problem():
    task = make_task(TaskConfig(seed=99, num_problems=24, **TINY_RANGES))
    probe_problems = task.problems()
    held_out = {countdown_key(p.fields["numbers"], p.fields["target"]) for p in probe_problems}
    examples = task.sft_examples(2000, seed=1, held_out=probe_problems)
    assert len(examples) == 2000
    assert not {countdown_key(e.numbers, e.target) for e in examples} & held_out
    # without the exclusion the same draw does hit probe keys, so the check above can fail
    unfiltered = task.sft_examples(2000, seed=1, held_out=[])
    assert {countdown_key(e.numbers, e.target) for e in unfiltered} & held_out
    for example in examples[:50]:
        assert list(example.completions) == countdown_solutions(example.numbers, example.target, OPERATORS)


def test_a_drawn_row_shows_the_numbers_in_some_order_and_one_valid_completion():
    example = CountdownExample("3 5 7 2=40:", ("(3+5)*(7-2)", "(7-2)*(5+3)"), numbers=(3, 5, 7, 2), target=40)
    rng = random.Random(0)
    rows = [example.draw(rng) for _ in range(200)]
    assert {completion for _, completion in rows} == set(example.completions)
    for prompt, _ in rows:
        numbers, target = prompt.removesuffix(":").split("=")
        assert sorted(map(int, numbers.split())) == [2, 3, 5, 7] and target == "40"
    assert len({prompt for prompt, _ in rows}) > 10  # many of the 24 orders
