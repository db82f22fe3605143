"""countdown: reasoning-gym's countdown generator; answers checked in-process with our own bounded
arithmetic grammar (`probe.expression`), never with reasoning-gym's scorer (which runs sympy's
`parse_expr`, i.e. Python, on the answer).

Also what the embedded base model is trained on (`CountdownTask.sft_examples`): problems drawn the
way reasoning-gym draws them, each with every valid expression over its numbers (`countdown_solutions`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from reasoning_gym.games.countdown import CountdownConfig, CountdownDataset

from probe.cli import ConfigError
from probe.expression import (
    ExpressionError,
    ExpressionLimits,
    canonical,
    evaluate,
    numbers_used,
    parse_expression,
)
from probe.tasks.base import NA, Problem, Reason, SFTExample, Task, TaskConfig, Verdict, last_tagged

COUNTDOWN_CHAT_INSTRUCTION = (
    "\nPut the final expression inside <answer></answer>, e.g. <answer>(1+2)*3</answer>."
)
COUNTDOWN_SEED_STRIDE = 2**32  # reasoning-gym seeds item i with Random(seed + i): spread seeds apart
# Every character of a compact prompt ("3 5 7 2=24:") or completion ("(3+5)*(7-2)"); the order is
# the embedded base model's vocabulary order (after its special tokens).
ALPHABET = "0123456789+-*/() =:"
MAX_DRAWS = 1000  # per problem; the target range is refused after this many misses


def countdown_prompt(numbers: Sequence[int], target: int) -> str:
    """The compact countdown prompt the embedded char-level base model is trained on.

    `countdown_prompt([3, 5, 7, 2], 24) == "3 5 7 2=24:"`; the completion is the bare
    expression (e.g. `(3+5)*(7-2)`) followed by EOS.
    """
    return f"{' '.join(str(x) for x in numbers)}={target}:"


def countdown_key(numbers: Sequence[int], target: int) -> tuple:
    """Order-free identity of a countdown problem, for train/probe overlap checks."""
    return (tuple(sorted(int(x) for x in numbers)), int(target))


class CountdownTask(Task):
    """Countdown: reasoning-gym's generator, our own bounded grammar and exact rational verifier."""

    name = "countdown"
    alphabet = ALPHABET

    def __init__(self, config: TaskConfig) -> None:
        super().__init__(config)
        if not set(config.operators) <= set("+-*/") or not config.operators:
            raise ConfigError(
                f"TaskConfig.operators: {config.operators!r} must be a non-empty subset of + - * /"
            )
        try:
            self.limits = ExpressionLimits(
                config.max_expression_chars,
                config.max_expression_tokens,
                config.max_expression_depth,
                config.max_number_digits,
            )
        except ValueError as error:
            raise ConfigError(f"TaskConfig: {error}") from None

    def problems(self) -> list[Problem]:
        config = self.config
        try:
            dataset = CountdownDataset(
                CountdownConfig(
                    min_numbers=config.min_numbers,
                    max_numbers=config.max_numbers,
                    min_value=config.min_value,
                    max_value=config.max_value,
                    min_target=config.min_target,
                    max_target=config.max_target,
                    operators=tuple(config.operators),
                    seed=config.seed * COUNTDOWN_SEED_STRIDE,
                    size=config.num_problems,
                )
            )
        except AssertionError as error:
            raise ConfigError(f"TaskConfig (countdown ranges): {error}") from None
        problems, seen = [], set()
        max_draws = 4 * config.num_problems + 1000  # bounded: ~500 draws/s on 2 shared CPU cores
        for index in range(max_draws):
            if len(problems) == config.num_problems:
                break
            try:
                entry = dataset[index]
            except ValueError:  # reasoning-gym gave up on this index (100 tries off the target range)
                continue
            numbers, target = [int(x) for x in entry["metadata"]["numbers"]], int(entry["metadata"]["target"])
            key = countdown_key(numbers, target)
            if config.unique_problems and key in seen:
                continue
            seen.add(key)
            problems.append(self._problem(numbers, target, entry["question"]))
        if len(problems) < config.num_problems:
            raise ConfigError(
                f"TaskConfig: only {len(problems)} of num_problems={config.num_problems} countdown problems "
                f"after {max_draws} draws; widen the ranges or set unique_problems=false"
            )
        return problems

    def _problem(self, numbers: list[int], target: int, question: str) -> Problem:
        if self.config.prompt_format == "compact":
            prompt = countdown_prompt(numbers, target)
        else:
            prompt = question + COUNTDOWN_CHAT_INSTRUCTION
        problem_id = f"countdown/{'_'.join(map(str, numbers))}/{target}"
        return Problem(problem_id, prompt, {"numbers": numbers, "target": target})

    def extract(self, completion: str) -> str | None:
        if self.config.prompt_format == "chat":
            answer = last_tagged(completion)
        else:
            answer = completion.strip()
        return answer or None

    def parse(self, answer: str) -> tuple | None:
        """The expression tree, or None when the text is outside the grammar or its limits."""
        try:
            return parse_expression(answer, self.limits)
        except ExpressionError:
            return None

    def follows_format(self, completion: str) -> bool:
        answer = self.extract(completion)
        return answer is not None and self.parse(answer) is not None

    def verify(self, problem: Problem, answer: str | None) -> Verdict:
        if answer is None:
            return Verdict(NA, False, Reason.NO_ANSWER)
        tree = self.parse(answer)
        if tree is None:
            return Verdict(NA, False, Reason.OUTSIDE_GRAMMAR)
        text = canonical(tree)
        if sorted(numbers_used(tree)) != sorted(problem.fields["numbers"]):
            return Verdict(text, False)
        try:
            value = evaluate(tree)
        except ZeroDivisionError:
            return Verdict(text, False)
        return Verdict(text, value == problem.fields["target"])

    def sft_examples(self, count: int, seed: int, held_out: Sequence[Problem]) -> list[CountdownExample]:
        """`count` problems drawn like reasoning-gym's (`sample_problem`) from one seeded stream, each
        with every valid expression over its numbers; problems whose `countdown_key` is held out are
        skipped (repeats among the examples are kept)."""
        keys = {countdown_key(p.fields["numbers"], p.fields["target"]) for p in held_out}
        rng = random.Random(seed)
        examples = []
        while len(examples) < count:
            numbers, target = sample_problem(rng, self.config)
            if countdown_key(numbers, target) in keys:
                continue
            solutions = countdown_solutions(numbers, target, self.config.operators)
            if not solutions:  # cannot happen for a chain-built target; kept as a loud check
                raise RuntimeError(f"no expression found for {numbers} = {target}")
            prompt = countdown_prompt(numbers, target)
            examples.append(CountdownExample(prompt, tuple(solutions), numbers=tuple(numbers), target=target))
        return examples


@dataclass(frozen=True, kw_only=True)
class CountdownExample(SFTExample):
    """A countdown SFT example: each row shows the numbers in a fresh random order (so may the probe)."""

    numbers: tuple[int, ...]
    target: int

    def draw(self, rng: random.Random) -> tuple[str, str]:
        order = list(self.numbers)
        rng.shuffle(order)
        return countdown_prompt(order, self.target), rng.choice(self.completions)


# --- drawing problems


def sample_problem(rng: random.Random, config: TaskConfig) -> tuple[list[int], int]:
    """One problem, drawn exactly as reasoning-gym's countdown generator draws item i from
    `Random(seed + i)` (tests/probe/test_tasks.py checks that they agree), without its sympy:
    thousands of draws per second instead of hundreds.

    Numbers uniform in [min_value, max_value]; a left-to-right chain of random operators whose
    value is the target (division only where it divides the running value, else subtraction);
    retried until the target is in [min_target, max_target]; numbers shuffled.
    """
    count = rng.randint(config.min_numbers, config.max_numbers)
    for _ in range(MAX_DRAWS):
        numbers = [rng.randint(config.min_value, config.max_value) for _ in range(count)]
        value = numbers[0]
        for i in range(1, count):
            op = rng.choice(config.operators)
            if op == "/":
                remaining = [x for x in numbers[i:] if x != 0]
                rng.shuffle(remaining)
                divisor = next((x for x in remaining if value % x == 0), None)
                if divisor is None:
                    op = "-"
                else:
                    numbers[i] = divisor
                    value //= divisor
                    continue
            value = (
                value + numbers[i] if op == "+" else value - numbers[i] if op == "-" else value * numbers[i]
            )
        if config.min_target <= value <= config.max_target:
            rng.shuffle(numbers)
            return numbers, value
    raise ConfigError(
        f"no countdown problem with a target in [{config.min_target}, {config.max_target}] after "
        f"{MAX_DRAWS} draws: widen the target range"
    )


# --- every solution


def _combine(left: list, right: list, operators: tuple[str, ...]) -> list:
    """Every `left op right` over two expression lists, in left-associative normal form.

    An expression is (numerator, denominator, kind, text); kind "atom" | "add" (+ -) | "mul" (* /).
    A right operand of the operator's own precedence is skipped (`a+(b-c)` is written `a+b-c`), so
    each text names one tree and carries only the parentheses it needs.
    """
    out = []
    for ln, ld, lk, ls in left:
        for rn, rd, rk, rs in right:
            for op in operators:
                if op in "+-":
                    if rk == "add":
                        continue
                    numerator = ln * rd + rn * ld if op == "+" else ln * rd - rn * ld
                    out.append((numerator, ld * rd, "add", f"{ls}{op}{rs}"))
                    continue
                if rk == "mul" or (op == "/" and rn == 0):
                    continue
                left_text = f"({ls})" if lk == "add" else ls
                right_text = f"({rs})" if rk == "add" else rs
                numerator, denominator = (ln * rn, ld * rd) if op == "*" else (ln * rd, ld * rn)
                out.append((numerator, denominator, "mul", f"{left_text}{op}{right_text}"))
    return out


@lru_cache(maxsize=4096)
def _expressions(numbers: tuple[int, ...], operators: tuple[str, ...]) -> list:
    """All expressions using each of the sorted `numbers` exactly once (exact rationals, unreduced)."""
    if len(numbers) == 1:
        return [(numbers[0], 1, "atom", str(numbers[0]))]
    out, seen = [], set()
    for mask in range(1, (1 << len(numbers)) - 1):
        left = tuple(x for i, x in enumerate(numbers) if mask >> i & 1)
        if left in seen:  # repeated numbers give the same split more than once
            continue
        seen.add(left)
        right = tuple(x for i, x in enumerate(numbers) if not mask >> i & 1)
        out.extend(_combine(_expressions(left, operators), _expressions(right, operators), operators))
    return out


def countdown_solutions(numbers: Sequence[int], target: int, operators: Sequence[str]) -> list[str]:
    """Every distinct expression text over `numbers` (each once) whose exact value is `target`, sorted."""
    found = {
        text
        for numerator, denominator, _, text in _expressions(tuple(sorted(numbers)), tuple(operators))
        if numerator == target * denominator
    }
    return sorted(found)
