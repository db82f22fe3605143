"""TRL reward functions built from probe/ task verifiers.

TRL calls `reward(prompts=..., completions=..., **columns)` with one list entry per completion;
the dataset's other columns arrive as keyword lists (`problem_id`, `fields` as a JSON string; see
train/data.py), plus TRL's own `log_metric`. Completions are strings, or message lists in
conversational mode (the last message's content is the answer text).

Correctness: 1.0 correct, 0.0 wrong or unscored, None where the gold answer cannot be parsed (TRL
skips it). Per generation batch it logs, through TRL's `log_metric`, how many completions carry each
verdict reason (probe.tasks.Reason) as `rewards/<name>/<reason>`: TRL averages the values over the
processes and generation batches of a logging step, so the figure is completions per process per
generation batch. Verifiers never raise on model output; an exception here is a bug and surfaces.

Format (on with `format_reward_weight` > 0): 1.0 when the completion's answer is in the task's
answer format (grammar / tags / \\boxed{}), else 0.0.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable

from probe.tasks import Problem, Reason, Task, Verdict, count_reasons


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


def reward_name(task: Task, kind: str) -> str:
    """`countdown_correct`, `reasoning_gym_countdown_format`, ...: safe as a W&B key segment."""
    return f"{task.name.replace(':', '_')}_{kind}"


class CorrectnessReward:
    """Callable with TRL's reward signature; `__name__` is what TRL logs (`rewards/<name>/mean`)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.__name__ = reward_name(task, "correct")

    def __call__(
        self,
        prompts: list,
        completions: list,
        problem_id: list[str],
        fields: list,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs,
    ) -> list[float | None]:
        verdicts = self.judge(prompts, completions, problem_id, fields)
        if log_metric is not None:
            counts = count_reasons(verdicts)
            for reason in Reason:  # every reason, zeros included, so TRL's averages are per batch
                log_metric(f"rewards/{self.__name__}/{reason}", float(counts.get(reason, 0)))
        return [None if v.correct is None else float(v.correct) for v in verdicts]

    def judge(self, prompts: list, completions: list, problem_ids: list[str], fields: list) -> list[Verdict]:
        """Verdicts in order; each problem's completions are judged together (once per distinct answer)."""
        problems: dict[str, Problem] = {}
        groups: dict[str, list[int]] = defaultdict(list)  # problem_id -> completion positions
        texts = []
        rows = zip(prompts, completions, problem_ids, fields, strict=True)
        for position, (prompt, completion, problem_id, field_json) in enumerate(rows):
            if problem_id not in problems:
                loaded = json.loads(field_json) if isinstance(field_json, str) else field_json
                prompt_text = prompt if isinstance(prompt, str) else completion_text(prompt)
                problems[problem_id] = Problem(problem_id, prompt_text, loaded)
            groups[problem_id].append(position)
            texts.append(completion_text(completion))
        verdicts: list[Verdict | None] = [None] * len(texts)
        for problem_id, positions in groups.items():
            judged = self.task.judge_many(problems[problem_id], [texts[p] for p in positions])
            for position, verdict in zip(positions, judged, strict=True):
                verdicts[position] = verdict
        return verdicts


class FormatReward:
    """1.0 when the completion's answer is in the task's answer format (grammar / tags / \\boxed{})."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.__name__ = reward_name(task, "format")

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float]:
        return [float(self.task.follows_format(completion_text(c))) for c in completions]


def make_reward_function(task: Task) -> CorrectnessReward:
    """Correctness reward: 1.0 / 0.0, None when the gold answer cannot be parsed."""
    return CorrectnessReward(task)


def make_format_reward(task: Task) -> FormatReward:
    """Format reward: 1.0 when the answer is in the task's answer format, else 0.0."""
    return FormatReward(task)
