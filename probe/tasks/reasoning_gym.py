"""reasoning_gym:<name>: any audited reasoning-gym data set (`probe.scorer_audit`), scored by its own
`score_answer` in a confined, time-limited worker process (`probe.sandbox`) on the very entry the
prompt was made from; answers to scorers that evaluate text must pass the data set's grammar first.
"""

from __future__ import annotations

import json

from reasoning_gym.factory import DATASETS

from probe.cli import ConfigError
from probe.grammar import GrammarRejection
from probe.scorer_audit import (
    CODE,
    GRAMMAR,
    REASONING_GYM_SCORERS,
    answer_grammar,
    create_dataset,
    decode_entry,
    encode_entry,
)
from probe.tasks.base import NA, Problem, Reason, TaskConfig, Verdict, _IsolatedTask, last_tagged

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
        audit = REASONING_GYM_SCORERS.get(self.dataset_name)
        if audit is None:
            raise ConfigError(
                f"TaskConfig.task: reasoning-gym data set {self.dataset_name!r} has no row in "
                "probe/scorer_audit.py: its scorer has not been audited"
            )
        if audit.kind == CODE and self.dataset_name not in config.reasoning_gym_code_scorers:
            raise ConfigError(
                f"TaskConfig.task: {config.task!r} is refused: its scorer needs more than an answer grammar "
                f"({audit.note}). To run it anyway, each call in a fresh confined process, add "
                f"{self.dataset_name!r} to TaskConfig.reasoning_gym_code_scorers"
            )
        self.per_call = audit.kind == CODE
        try:
            self.dataset_kwargs = json.loads(config.reasoning_gym_kwargs)
        except ValueError as error:
            raise ConfigError(f"TaskConfig.reasoning_gym_kwargs: not JSON ({error})") from None
        if not isinstance(self.dataset_kwargs, dict):
            raise ConfigError("TaskConfig.reasoning_gym_kwargs: must be a JSON object")
        self.name = config.task
        super().__init__(config)

    def problems(self) -> list[Problem]:
        config = self.config
        try:
            dataset = create_dataset(self.dataset_name, config.seed, config.num_problems, self.dataset_kwargs)
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
            entry = dataset[index]
            question = entry["question"]
            prompt = question + REASONING_GYM_CHAT_INSTRUCTION if config.prompt_format == "chat" else question
            problem_id = f"{self.name}/{config.seed}/{index}"
            try:  # the scorer sees this very entry: regenerating it elsewhere can give another problem
                carried = encode_entry({"answer": entry["answer"], "metadata": entry["metadata"]})
            except TypeError as error:
                raise ConfigError(f"TaskConfig.task: {config.task!r}: {error}") from None
            problems.append(Problem(problem_id, prompt, {**fields, "index": index, "entry": carried}))
        return problems

    def extract(self, completion: str) -> str | None:
        answer = last_tagged(completion) if self.config.prompt_format == "chat" else completion.strip()
        return answer or None

    def verify(self, problem: Problem, answer: str | None) -> Verdict:
        if answer is None:
            return Verdict(NA, False, Reason.NO_ANSWER)
        if len(answer) > self.config.max_answer_chars:
            return Verdict(NA, False, Reason.TOO_LONG)
        if REASONING_GYM_SCORERS[self.dataset_name].kind == GRAMMAR:
            grammar = answer_grammar(self.dataset_name, decode_entry(problem.fields["entry"]["metadata"]))
            try:
                grammar.check(answer)
            except GrammarRejection as rejection:
                return Verdict(NA, False, Reason(rejection.reason))
        score = self._score("reasoning_gym", fields=problem.fields, answer=answer)
        if isinstance(score, Reason):
            return Verdict(answer, False, score)
        return Verdict(answer, score == 1.0)
