"""Tasks: problems, prompts, answer extraction, canonical answers and verifiers.

Three tasks, built by `make_task(TaskConfig)`, one module each:
- `countdown` (probe.tasks.countdown): reasoning-gym's generator, our own bounded grammar and exact
  rational verifier;
- `reasoning_gym:<name>` (probe.tasks.reasoning_gym): any reasoning-gym data set, scored by its own
  `score_answer` in an isolated worker process;
- `math` (probe.tasks.math): the last `\\boxed{...}` checked with math-verify in the worker process.

What they share (TaskConfig, Problem, Verdict, the Task interface, extraction) is in probe.tasks.base;
this module re-exports it, so `from probe.tasks import X` is the way in.
"""

from __future__ import annotations

from probe.cli import ConfigError
from probe.tasks.base import (
    NA,
    PROMPT_FORMATS,
    Problem,
    Task,
    TaskConfig,
    Verdict,
    last_boxed,
    last_tagged,
)
from probe.tasks.countdown import CountdownTask, countdown_key, countdown_prompt
from probe.tasks.math import MathTask
from probe.tasks.reasoning_gym import ReasoningGymTask

__all__ = [
    "NA",
    "CountdownTask",
    "MathTask",
    "Problem",
    "ReasoningGymTask",
    "Task",
    "TaskConfig",
    "Verdict",
    "countdown_key",
    "countdown_prompt",
    "last_boxed",
    "last_tagged",
    "make_task",
]


def make_task(config: TaskConfig) -> Task:
    """Build the task named by `config.task`; ConfigError names anything unknown or inconsistent."""
    if config.prompt_format not in PROMPT_FORMATS:
        raise ConfigError(
            f"TaskConfig.prompt_format: {config.prompt_format!r} is not one of {PROMPT_FORMATS}"
        )
    if config.task == "countdown":
        return CountdownTask(config)
    if config.task.startswith("reasoning_gym:"):
        return ReasoningGymTask(config)
    if config.task == "math":
        return MathTask(config)
    raise ConfigError(
        f"TaskConfig.task: unknown task {config.task!r} (expected countdown, reasoning_gym:<name> or math)"
    )
