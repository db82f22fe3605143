"""Tasks: problems, prompts, answer extraction, canonical answers and verifiers.

Three tasks, built by `make_task(TaskConfig)`, one module each:
- `countdown` (probe.tasks.countdown): reasoning-gym's generator, our own bounded grammar and exact
  rational verifier;
- `reasoning_gym:<name>` (probe.tasks.reasoning_gym): any reasoning-gym data set, scored by its own
  `score_answer` in an isolated worker process;
- `math` (probe.tasks.math): the last `\\boxed{...}` checked with math-verify in the worker process.

What they share (TaskConfig, Problem, Verdict, the Task interface, extraction) is in probe.tasks.base;
several tasks, one per domain, make a TaskSuite (probe.tasks.suite; `make_suite`). This module
re-exports them, so `from probe.tasks import X` is the way in.
"""

from __future__ import annotations

from collections.abc import Mapping

from probe.cli import ConfigError
from probe.tasks.base import (
    NA,
    PROMPT_FORMATS,
    AnswerForm,
    Problem,
    Reason,
    SFTExample,
    Task,
    TaskConfig,
    Verdict,
    count_reasons,
    last_boxed,
    last_tagged,
)
from probe.tasks.countdown import (
    CountdownExample,
    CountdownTask,
    countdown_key,
    countdown_prompt,
    countdown_solutions,
)
from probe.tasks.math import MathTask
from probe.tasks.reasoning_gym import ReasoningGymTask
from probe.tasks.suite import SuiteConfig, TaskSuite, suite_sections

__all__ = [
    "NA",
    "AnswerForm",
    "CountdownExample",
    "CountdownTask",
    "MathTask",
    "Problem",
    "ReasoningGymTask",
    "Reason",
    "SFTExample",
    "SuiteConfig",
    "Task",
    "TaskConfig",
    "TaskSuite",
    "Verdict",
    "count_reasons",
    "countdown_key",
    "countdown_prompt",
    "countdown_solutions",
    "last_boxed",
    "last_tagged",
    "make_suite",
    "make_task",
    "suite_sections",
    "task_class",
]


def task_class(name: str) -> type[Task]:
    """The Task class of a `TaskConfig.task` name; ConfigError names an unknown one."""
    if name == "countdown":
        return CountdownTask
    if name.startswith("reasoning_gym:"):
        return ReasoningGymTask
    if name == "math":
        return MathTask
    raise ConfigError(
        f"TaskConfig.task: unknown task {name!r} (expected countdown, reasoning_gym:<name> or math)"
    )


def make_task(config: TaskConfig) -> Task:
    """Build the task named by `config.task`; ConfigError names anything unknown or inconsistent."""
    if config.prompt_format not in PROMPT_FORMATS:
        raise ConfigError(
            f"TaskConfig.prompt_format: {config.prompt_format!r} is not one of {PROMPT_FORMATS}"
        )
    return task_class(config.task)(config)


def make_suite(sections: Mapping[str, TaskConfig]) -> TaskSuite:
    """A TaskSuite of one task per domain (`suite_sections` reads them from a recipe)."""
    return TaskSuite({domain: make_task(config) for domain, config in sections.items()})
