"""A suite of tasks, one per domain: several task sections in one probe (or training) recipe.

A probe recipe holds either one task section (TaskConfig keys at its top level: one domain, named
after the task) or `suite:`, a mapping of domain name -> task section:

    suite:
      math:      {task: math, data_path: runs/data/arith_tiny/probe.jsonl, id_column: id}
      countdown: {task: countdown, seed: 1234, num_problems: 200}
    n: 64          # the sampling section is shared (one budget, so pass@k pools over domains)

Every problem carries its domain (`Problem.domain`) and is prompted, extracted, judged and classed by
its own domain's task; in a suite of several domains its id is prefixed with the domain
(`math/math/probe-000001`), so ids stay unique across domains.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from probe.cli import ConfigError, check_types
from probe.domains import check_domain_name, default_domain
from probe.tasks.base import Problem, Task, TaskConfig


@dataclass
class SuiteConfig:
    """Several task sections in one probe recipe (the paper's per-domain view)."""

    suite: dict | str | None = field(
        default_factory=dict,
        metadata={
            "help": "Domain name -> task section (TaskConfig keys) for a probe of several domains; empty: "
            "the recipe's top-level task keys are its one domain, named after the task. A JSON object on "
            "the command line."
        },
    )

    def __post_init__(self) -> None:
        self.suite = parse_sections(self.suite, "SuiteConfig.suite")


def parse_sections(value: dict | str | None, where: str) -> dict:
    """A mapping of sections from YAML (a dict) or the command line (a JSON object)."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{where}: not a JSON object: {value!r} ({error})") from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError(f"{where}: expected a mapping of domain name -> task section, got {value!r}")
    return value


def task_section(values: Mapping, where: str, extra_keys: tuple[str, ...] = ()) -> TaskConfig:
    """A TaskConfig from one recipe section; unknown keys and wrong types are named with `where`."""
    known = {f.name for f in dataclasses.fields(TaskConfig)}
    unknown = sorted(set(values) - known - set(extra_keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    config = TaskConfig(**{k: v for k, v in values.items() if k in known})
    check_types(config, where)  # `train_task.num_problems: expected int, got 'many'`
    return config


def suite_sections(task_config: TaskConfig, suite_config: SuiteConfig | None) -> dict[str, TaskConfig]:
    """domain -> TaskConfig of a probe recipe: its suite, or its one task section."""
    if suite_config is None or not suite_config.suite:
        return {default_domain(task_config.task): task_config}
    defaults = dataclasses.asdict(TaskConfig())
    top_level = sorted(k for k, v in dataclasses.asdict(task_config).items() if v != defaults[k])
    if top_level:
        raise ConfigError(
            f"recipe sets task keys {top_level} beside suite: put them in a suite section (each domain "
            "has its own)"
        )
    sections = {}
    for name, values in suite_config.suite.items():
        check_domain_name(name, "SuiteConfig.suite")
        sections[name] = task_section(values, f"suite.{name}")
    return sections


class TaskSuite:
    """One task per domain; hands each problem to its domain's task."""

    def __init__(self, tasks: Mapping[str, Task]) -> None:
        if not tasks:
            raise ConfigError("a suite needs at least one domain")
        for name in tasks:
            check_domain_name(name, "suite")
        self.tasks = dict(tasks)

    @classmethod
    def of(cls, task: Task | TaskSuite) -> TaskSuite:
        """A suite as it is, or one task as a suite of one domain named after it."""
        return task if isinstance(task, TaskSuite) else cls({default_domain(task.config.task): task})

    @property
    def domains(self) -> list[str]:
        return list(self.tasks)

    @property
    def name(self) -> str:
        """The task's name for one domain; `suite(domain=task, ...)` for several."""
        if len(self.tasks) == 1:
            return next(iter(self.tasks.values())).name
        return "suite(" + ", ".join(f"{d}={t.name}" for d, t in self.tasks.items()) + ")"

    def identity(self) -> dict:
        """What a probe dir's config.json holds of its tasks: {"task": ...} for one domain (as before
        domains existed, so those dirs still resume), {"suite": {domain: ...}} for several."""
        if len(self.tasks) == 1:
            return {"task": dataclasses.asdict(next(iter(self.tasks.values())).config)}
        return {"suite": {d: dataclasses.asdict(t.config) for d, t in self.tasks.items()}}

    def problems(self) -> list[Problem]:
        """Every domain's problems in domain order, each carrying its domain."""
        problems = []
        for domain, task in self.tasks.items():
            for problem in task.problems():
                problem_id = problem.problem_id if len(self.tasks) == 1 else f"{domain}/{problem.problem_id}"
                problems.append(dataclasses.replace(problem, problem_id=problem_id, domain=domain))
        return problems

    def domain_of(self, problem: Problem) -> str:
        """A problem's domain (a problem made by the task itself, with no domain, in a one-domain suite)."""
        if problem.domain:
            return problem.domain
        if len(self.tasks) == 1:
            return self.domains[0]
        raise ValueError(f"problem {problem.problem_id} carries no domain in a suite of {self.domains}")

    def task_of(self, problem: Problem) -> Task:
        domain = self.domain_of(problem)
        if domain not in self.tasks:
            raise ValueError(f"problem {problem.problem_id}: domain {domain!r} is not one of {self.domains}")
        return self.tasks[domain]

    def close(self) -> None:
        for task in self.tasks.values():
            task.close()
