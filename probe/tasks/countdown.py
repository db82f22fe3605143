"""countdown: reasoning-gym's countdown generator; answers checked in-process with our own bounded
arithmetic grammar (`probe.expression`), never with reasoning-gym's scorer (which runs sympy's
`parse_expr`, i.e. Python, on the answer).
"""

from __future__ import annotations

from collections.abc import Sequence

from probe.cli import ConfigError
from probe.expression import (
    ExpressionError,
    ExpressionLimits,
    canonical,
    evaluate,
    numbers_used,
    parse_expression,
)
from probe.tasks.base import NA, Problem, Task, TaskConfig, Verdict, last_tagged

COUNTDOWN_CHAT_INSTRUCTION = (
    "\nPut the final expression inside <answer></answer>, e.g. <answer>(1+2)*3</answer>."
)
COUNTDOWN_SEED_STRIDE = 2**32  # reasoning-gym seeds item i with Random(seed + i): spread seeds apart


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
        from reasoning_gym.games.countdown import CountdownConfig, CountdownDataset

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
        tree = None if answer is None else self.parse(answer)
        if tree is None:
            return Verdict(NA, False)
        text = canonical(tree)
        if sorted(numbers_used(tree)) != sorted(problem.fields["numbers"]):
            return Verdict(text, False)
        try:
            value = evaluate(tree)
        except ZeroDivisionError:
            return Verdict(text, False)
        return Verdict(text, value == problem.fields["target"])
