"""reasoning_gym:<name>: any reasoning-gym data set, scored by its own `score_answer` in an isolated,
time-limited worker process (`probe.sandbox`).
"""

from __future__ import annotations

import json

import reasoning_gym
from reasoning_gym.factory import DATASETS

from probe.cli import ConfigError
from probe.tasks.base import NA, Problem, Reason, TaskConfig, Verdict, _IsolatedTask, last_tagged
from probe.tasks.countdown import CountdownTask

REASONING_GYM_CHAT_INSTRUCTION = "\nPut your final answer inside <answer></answer>."


class ReasoningGymTask(_IsolatedTask):
    """Any reasoning-gym data set, scored by its own score_answer (1.0 = correct) in the worker."""

    preload = ("reasoning_gym",)

    def __init__(self, config: TaskConfig) -> None:
        self.dataset_name = config.task.split(":", 1)[1]
        if self.dataset_name not in DATASETS:
            raise ConfigError(
                f"TaskConfig.task: unknown reasoning-gym data set {self.dataset_name!r} in {config.task!r}"
            )
        try:
            self.dataset_kwargs = json.loads(config.reasoning_gym_kwargs)
        except ValueError as error:
            raise ConfigError(f"TaskConfig.reasoning_gym_kwargs: not JSON ({error})") from None
        if not isinstance(self.dataset_kwargs, dict):
            raise ConfigError("TaskConfig.reasoning_gym_kwargs: must be a JSON object")
        self.name = config.task
        super().__init__(config)
        # Answers to data sets whose scorer evaluates text must pass our own grammar first.
        self._grammar = CountdownTask(config) if self.dataset_name == "countdown" else None

    def problems(self) -> list[Problem]:
        config = self.config
        try:
            dataset = reasoning_gym.create_dataset(
                self.dataset_name, seed=config.seed, size=config.num_problems, **self.dataset_kwargs
            )
        except (TypeError, ValueError, AssertionError) as error:
            raise ConfigError(f"TaskConfig.reasoning_gym_kwargs for {self.dataset_name!r}: {error}") from None
        fields = {
            "dataset": self.dataset_name,
            "seed": config.seed,
            "size": config.num_problems,
            "kwargs": self.dataset_kwargs,
        }
        problems = []
        for index in range(config.num_problems):
            question = dataset[index]["question"]
            prompt = question + REASONING_GYM_CHAT_INSTRUCTION if config.prompt_format == "chat" else question
            problem_id = f"{self.name}/{config.seed}/{index}"
            problems.append(Problem(problem_id, prompt, {**fields, "index": index}))
        return problems

    def extract(self, completion: str) -> str | None:
        answer = last_tagged(completion) if self.config.prompt_format == "chat" else completion.strip()
        return answer or None

    def verify(self, problem: Problem, answer: str | None) -> Verdict:
        if answer is None:
            return Verdict(NA, False, Reason.NO_ANSWER)
        if len(answer) > self.config.max_answer_chars:
            return Verdict(NA, False, Reason.TOO_LONG)
        if self._grammar is not None and self._grammar.parse(answer) is None:
            return Verdict(answer, False, Reason.OUTSIDE_GRAMMAR)
        score = self._score("reasoning_gym", fields=problem.fields, answer=answer)
        if isinstance(score, Reason):
            return Verdict(answer, False, score)
        return Verdict(answer, score == 1.0)
