"""TRL reward functions built from probe/ task verifiers.

TRL calls `reward(prompts=..., completions=..., **columns)` with one list entry per completion;
the dataset's other columns arrive as keyword lists (`problem_id`, `fields` as a JSON string,
`domain`; see train/data.py), plus TRL's own `log_metric`. Completions are strings, or message lists
in conversational mode (the last message's content is the answer text). Each completion is judged by
its domain's task (a training mixture of several domains: probe.tasks.TaskSuite).

Correctness: 1.0 correct, 0.0 wrong or unscored, None where the gold answer cannot be parsed (TRL
skips it). Per generation batch it logs, through TRL's `log_metric`, how many completions carry each
verdict reason (probe.tasks.Reason) as `rewards/<name>/<reason>`: TRL averages the values over the
processes and generation batches of a logging step, so the figure is completions per process per
generation batch. With several domains it also logs each domain's mean correctness in the batch,
`rewards/<name>/<domain>/mean` (batches without that domain log nothing for it). Verifiers never
raise on model output; an exception here is a bug and surfaces.

Format (on with `format_reward_weight` > 0): 1.0 when the completion's answer is in the task's
answer format (grammar / tags / \\boxed{}), else 0.0.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable

from probe.tasks import Problem, Reason, Task, TaskSuite, Verdict, count_reasons


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


def reward_name(task: Task | TaskSuite, kind: str) -> str:
    """`countdown_correct`, `reasoning_gym_countdown_format`, `suite_correct` (several domains), ...:
    safe as a W&B key segment."""
    suite = TaskSuite.of(task)
    name = "suite" if len(suite.tasks) > 1 else suite.name  # suite.name: the one task's name
    return f"{name.replace(':', '_')}_{kind}"


def _problem(problem_id: str, prompt, fields, domain: str | None) -> Problem:
    loaded = json.loads(fields) if isinstance(fields, str) else fields
    prompt_text = prompt if isinstance(prompt, str) else completion_text(prompt)
    return Problem(problem_id, prompt_text, loaded, domain or "")


class CorrectnessReward:
    """Callable with TRL's reward signature; `__name__` is what TRL logs (`rewards/<name>/mean`)."""

    def __init__(self, task: Task | TaskSuite) -> None:
        self.suite = TaskSuite.of(task)
        self.__name__ = reward_name(self.suite, "correct")

    def __call__(
        self,
        prompts: list,
        completions: list,
        problem_id: list[str],
        fields: list,
        log_metric: Callable[[str, float], None] | None = None,
        domain: list[str] | None = None,
        **kwargs,
    ) -> list[float | None]:
        domains = domain if domain is not None else [None] * len(completions)
        verdicts = self.judge(prompts, completions, problem_id, fields, domains)
        if log_metric is not None:
            counts = count_reasons(verdicts)
            for reason in Reason:  # every reason, zeros included, so TRL's averages are per batch
                log_metric(f"rewards/{self.__name__}/{reason}", float(counts.get(reason, 0)))
            if len(self.suite.tasks) > 1:
                self.log_domains(log_metric, domains, verdicts)
        return [None if v.correct is None else float(v.correct) for v in verdicts]

    def log_domains(self, log_metric, domains: list, verdicts: list[Verdict]) -> None:
        """Each domain's mean correctness over its scored completions in this batch."""
        scored: dict[str, list[float]] = defaultdict(list)
        for name, verdict in zip(domains, verdicts, strict=True):
            if verdict.correct is not None:
                scored[name].append(float(verdict.correct))
        for name, values in scored.items():
            log_metric(f"rewards/{self.__name__}/{name}/mean", sum(values) / len(values))

    def judge(
        self, prompts: list, completions: list, problem_ids: list[str], fields: list, domains: list
    ) -> list[Verdict]:
        """Verdicts in order; each problem's completions are judged together (once per distinct answer)
        by its domain's task."""
        problems: dict[str, Problem] = {}
        groups: dict[str, list[int]] = defaultdict(list)  # problem_id -> completion positions
        texts = []
        rows = zip(prompts, completions, problem_ids, fields, domains, strict=True)
        for position, (prompt, completion, problem_id, field_json, name) in enumerate(rows):
            if problem_id not in problems:
                problems[problem_id] = _problem(problem_id, prompt, field_json, name)
            groups[problem_id].append(position)
            texts.append(completion_text(completion))
        verdicts: list[Verdict | None] = [None] * len(texts)
        for problem_id, positions in groups.items():
            problem = problems[problem_id]
            judged = self.suite.task_of(problem).judge_many(problem, [texts[p] for p in positions])
            for position, verdict in zip(positions, judged, strict=True):
                verdicts[position] = verdict
        return verdicts


class FormatReward:
    """1.0 when the completion's answer is in its task's answer format (grammar / tags / \\boxed{})."""

    def __init__(self, task: Task | TaskSuite) -> None:
        self.suite = TaskSuite.of(task)
        self.__name__ = reward_name(self.suite, "format")

    def __call__(
        self, prompts: list, completions: list, domain: list[str] | None = None, **kwargs
    ) -> list[float]:
        domains = domain if domain is not None else [""] * len(completions)
        return [
            float(self.suite.task_of(Problem("", "", {}, name)).follows_format(completion_text(c)))
            for c, name in zip(completions, domains, strict=True)
        ]


def make_reward_function(task: Task | TaskSuite) -> CorrectnessReward:
    """Correctness reward: 1.0 / 0.0, None when the gold answer cannot be parsed."""
    return CorrectnessReward(task)


def make_format_reward(task: Task | TaskSuite) -> FormatReward:
    """Format reward: 1.0 when the answer is in the task's answer format, else 0.0."""
    return FormatReward(task)
