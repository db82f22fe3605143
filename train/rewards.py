"""TRL reward functions built from probe/ task verifiers.

TRL calls `reward(prompts=..., completions=..., **columns)` with one list entry per completion;
the dataset's other columns arrive as keyword lists (`problem_id`, `fields` as a JSON string; see
train/data.py). Completions are strings, or message lists in conversational mode (the last
message's content is the answer text). Rewards: 1.0 correct, 0.0 wrong, None where the gold answer
cannot be parsed (TRL skips it) or where the verifier itself raised (counted in `.errors`).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict

from probe.tasks import Problem, Task

logger = logging.getLogger(__name__)


def completion_text(completion: str | list[dict]) -> str:
    """The text of a completion: itself, or the content of the last message of a conversation."""
    if isinstance(completion, str):
        return completion
    if not completion:
        return ""
    content = completion[-1].get("content", "")
    if isinstance(content, list):  # multimodal-style content parts: keep the text ones
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _prompt_text(prompt: str | list[dict]) -> str:
    return prompt if isinstance(prompt, str) else completion_text(prompt)


class RewardFunction:
    """Callable with TRL's reward signature; `__name__` is what TRL logs (`rewards/<name>/mean`)."""

    def __init__(self, task: Task, name: str) -> None:
        self.task = task
        self.__name__ = name
        self.errors = 0  # completions whose verification raised (their reward is None)

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float | None]:
        problem_ids, fields = kwargs["problem_id"], kwargs["fields"]
        problems: dict[str, Problem] = {}
        groups: dict[str, list[int]] = defaultdict(list)  # problem_id -> completion positions
        texts = []
        rows = zip(prompts, completions, problem_ids, fields, strict=True)
        for position, (prompt, completion, problem_id, field_json) in enumerate(rows):
            if problem_id not in problems:
                loaded = json.loads(field_json) if isinstance(field_json, str) else field_json
                problems[problem_id] = Problem(problem_id, _prompt_text(prompt), loaded)
            groups[problem_id].append(position)
            texts.append(completion_text(completion))
        rewards: list[float | None] = [None] * len(texts)
        for problem_id, positions in groups.items():
            for position, reward in zip(
                positions, self._group(problems[problem_id], positions, texts), strict=True
            ):
                rewards[position] = reward
        return rewards

    def _group(self, problem: Problem, positions: list[int], texts: list[str]) -> list[float | None]:
        """One problem's rewards: judged together (once per distinct answer), else one by one."""
        try:
            return [self.score(problem, text) for text in self._batch(problem, [texts[p] for p in positions])]
        except Exception:  # noqa: BLE001 - fall back to per-completion so one bad input costs one reward
            pass
        rewards = []
        for position in positions:
            try:
                rewards.append(self.score(problem, self._batch(problem, [texts[position]])[0]))
            except Exception as error:  # noqa: BLE001 - training goes on; the count is reported
                self.errors += 1
                logger.warning(
                    "%s: verifier raised on %s: %r; reward None", self.__name__, problem.problem_id, error
                )
                rewards.append(None)
        return rewards

    def _batch(self, problem: Problem, texts: list[str]) -> list:
        return self.task.judge_many(problem, texts)

    def score(self, problem: Problem, verdict) -> float | None:
        return None if verdict.correct is None else float(verdict.correct)


class FormatReward(RewardFunction):
    """1.0 when the completion's answer is in the task's answer format (grammar / tags / \\boxed{})."""

    def _batch(self, problem: Problem, texts: list[str]) -> list:
        return [self.task.follows_format(text) for text in texts]

    def score(self, problem: Problem, follows: bool) -> float | None:
        return float(follows)


def reward_name(task: Task, kind: str) -> str:
    """`countdown_correct`, `reasoning_gym_countdown_format`, ...: safe as a W&B key segment."""
    return f"{task.name.replace(':', '_')}_{kind}"


def make_reward_function(task: Task) -> RewardFunction:
    """Correctness reward: 1.0 / 0.0, None when the gold answer cannot be parsed."""
    return RewardFunction(task, reward_name(task, "correct"))


def make_format_reward(task: Task) -> FormatReward:
    """Format reward: 1.0 when the answer is in the task's answer format, else 0.0."""
    return FormatReward(task, reward_name(task, "format"))


format_reward = make_format_reward  # the name in the shared design's interface
