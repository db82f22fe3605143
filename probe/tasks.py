"""Tasks: problems, prompts, answer extraction, canonical answers and verifiers.

Three tasks, built by `make_task(TaskConfig)`:
- `countdown`: reasoning-gym's countdown generator; answers checked in-process with our own bounded
  arithmetic grammar (`probe.expression`), never with reasoning-gym's scorer (which runs sympy's
  `parse_expr`, i.e. Python, on the answer).
- `reasoning_gym:<name>`: any reasoning-gym data set, scored by its own `score_answer` in an isolated,
  time-limited worker process (`probe.sandbox`).
- `math`: problems from a jsonl/parquet file or a `datasets` name; the last `\\boxed{...}` is checked
  with math-verify, also in the worker process (its signal timeouts then always run on a main thread).

`Task.judge` never raises on model output: anything unparseable is `Verdict("NA", False)`.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from probe.cli import ConfigError
from probe.expression import (
    ExpressionError,
    ExpressionLimits,
    canonical,
    evaluate,
    numbers_used,
    parse_expression,
)
from probe.sandbox import IsolatedScorer, ScorerCrashed, ScorerTimeout

logger = logging.getLogger(__name__)

NA = "NA"
PROMPT_FORMATS = ("compact", "chat")
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOXED = "\\boxed{"
COUNTDOWN_CHAT_INSTRUCTION = (
    "\nPut the final expression inside <answer></answer>, e.g. <answer>(1+2)*3</answer>."
)
REASONING_GYM_CHAT_INSTRUCTION = "\nPut your final answer inside <answer></answer>."
MATH_CHAT_INSTRUCTION = "\n\nPut your final answer within \\boxed{}."
COUNTDOWN_SEED_STRIDE = 2**32  # reasoning-gym seeds item i with Random(seed + i): spread seeds apart


@dataclass(frozen=True)
class Problem:
    problem_id: str  # stable; countdown: f"countdown/{'_'.join(map(str, numbers))}/{target}"
    prompt: str  # text given to the model
    fields: dict  # JSON-serialisable verifier inputs (countdown: {"numbers": [...], "target": int})


@dataclass(frozen=True)
class Verdict:
    answer: str  # canonical answer, or "NA" (unparseable / unfinished / no answer)
    correct: bool | None  # None: gold answer unparseable (problem skipped, counted, warned)


@dataclass
class TaskConfig:
    """Which task, how many problems, and the verifier's limits."""

    task: str = field(
        default="countdown", metadata={"help": "countdown | reasoning_gym:<dataset name> | math"}
    )
    num_problems: int = field(
        default=200, metadata={"help": "Problems to generate/load (math: <= 0 keeps all)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the problem generator/sample (deterministic)."})
    prompt_format: str = field(
        default="compact",
        metadata={
            "help": "compact: bare prompt, the whole completion is the answer (countdown: '3 5 7 2=24:'); "
            "chat: the task's question plus an answer-format instruction (<answer></answer>; "
            "math: \\boxed{})."
        },
    )
    unique_problems: bool = field(
        default=True,
        metadata={
            "help": "countdown: drop repeats of (sorted numbers, target); turn off for training sets "
            "larger than the distinct problems the ranges allow."
        },
    )
    # --- countdown (passed to reasoning-gym's CountdownConfig)
    min_numbers: int = field(default=3, metadata={"help": "countdown: fewest numbers per problem."})
    max_numbers: int = field(default=4, metadata={"help": "countdown: most numbers per problem."})
    min_value: int = field(default=1, metadata={"help": "countdown: smallest number value (>= 1)."})
    max_value: int = field(default=9, metadata={"help": "countdown: largest number value."})
    min_target: int = field(default=1, metadata={"help": "countdown: smallest target (>= 1)."})
    max_target: int = field(default=100, metadata={"help": "countdown: largest target."})
    operators: list[str] = field(
        default_factory=lambda: ["+", "-", "*", "/"],
        metadata={
            "help": "countdown: operators the generator may use (subset of + - * /); verification "
            "accepts all four, like reasoning-gym's scorer."
        },
    )
    max_expression_chars: int = field(default=200, metadata={"help": "countdown: longer answers are NA."})
    max_expression_tokens: int = field(
        default=100, metadata={"help": "countdown: answers with more tokens are NA."}
    )
    max_expression_depth: int = field(
        default=16, metadata={"help": "countdown: deeper parenthesis nesting is NA."}
    )
    max_number_digits: int = field(default=6, metadata={"help": "countdown: longer number literals are NA."})
    # --- reasoning_gym:<name>
    reasoning_gym_kwargs: str = field(
        default="{}", metadata={"help": "reasoning_gym:<name>: JSON object of the data set's config fields."}
    )
    # --- math
    data_path: str | None = field(default=None, metadata={"help": "math: local .jsonl/.json/.parquet file."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "math: `datasets` name (if no data_path)."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "math: `datasets` config name."})
    dataset_split: str = field(default="test", metadata={"help": "math: split to load."})
    problem_column: str = field(default="problem", metadata={"help": "math: column with the problem text."})
    answer_column: str = field(default="answer", metadata={"help": "math: column with the gold answer."})
    id_column: str | None = field(
        default=None, metadata={"help": "math: column with a stable id (else the row)."}
    )
    # --- isolated scorers (reasoning_gym:<name>, math)
    max_answer_chars: int = field(
        default=2000, metadata={"help": "Longer extracted answers are NA (not scored)."}
    )
    verifier_timeout_seconds: float = field(
        default=5.0, metadata={"help": "Wall-clock limit per scorer call."}
    )
    verifier_memory_mb: int = field(
        default=4096, metadata={"help": "Address-space limit of the scorer process."}
    )


def countdown_prompt(numbers: Sequence[int], target: int) -> str:
    """The compact countdown prompt the embedded char-level base model is trained on.

    `countdown_prompt([3, 5, 7, 2], 24) == "3 5 7 2=24:"`; the completion is the bare
    expression (e.g. `(3+5)*(7-2)`) followed by EOS.
    """
    return f"{' '.join(str(x) for x in numbers)}={target}:"


def countdown_key(numbers: Sequence[int], target: int) -> tuple:
    """Order-free identity of a countdown problem, for train/probe overlap checks."""
    return (tuple(sorted(int(x) for x in numbers)), int(target))


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


# --- shared machinery


class Task:
    """A task: problems, prompt, answer extraction, canonical form and verification."""

    name: str = ""

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        # "gold_unparseable" (distinct problems), "verifier_timeout", "verifier_error": read by callers
        self.counters: Counter[str] = Counter()

    def problems(self) -> list[Problem]:
        """Seeded, deterministic problem list."""
        raise NotImplementedError

    def extract(self, completion: str) -> str | None:
        """The raw answer text of a completion, or None when it has none."""
        raise NotImplementedError

    def verify(self, problem: Problem, answer: str | None) -> Verdict:
        """Verdict for an extracted answer (None = no answer)."""
        raise NotImplementedError

    def follows_format(self, completion: str) -> bool:
        """Whether the completion's answer is in the task's answer format (for a format reward)."""
        return self.extract(completion) is not None

    def judge(self, problem: Problem, completion: str) -> Verdict:
        return self.judge_many(problem, [completion])[0]

    def judge_many(self, problem: Problem, completions: list[str]) -> list[Verdict]:
        """Verdicts in order; each distinct extracted answer is verified once."""
        verdicts: dict[str | None, Verdict] = {}
        answers = [self.extract(completion) for completion in completions]
        for answer in answers:
            if answer not in verdicts:
                verdicts[answer] = self.verify(problem, answer)
        return [verdicts[answer] for answer in answers]

    def close(self) -> None:
        """Stop helper processes (a later call restarts them)."""


def last_tagged(text: str, open_tag: str = ANSWER_OPEN, close_tag: str = ANSWER_CLOSE) -> str | None:
    """Content of the last complete `<answer>...</answer>` (stripped), else None. Linear time."""
    end = text.rfind(close_tag)
    if end < 0:
        return None
    start = text.rfind(open_tag, 0, end)
    if start < 0:
        return None
    return text[start + len(open_tag) : end].strip()


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` with balanced braces, else None (e.g. cut off mid-answer)."""
    start = text.rfind(BOXED)
    if start < 0:
        return None
    depth = 1
    for position in range(start + len(BOXED), len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[start + len(BOXED) : position].strip()
    return None


class _IsolatedTask(Task):
    """A task whose scorer runs in an IsolatedScorer worker; answers are length-limited first."""

    preload: tuple[str, ...] = ()

    def __init__(self, config: TaskConfig) -> None:
        super().__init__(config)
        self.scorer = IsolatedScorer(self.preload, config.verifier_timeout_seconds, config.verifier_memory_mb)

    def _score(self, kind: str, **args) -> object | None:
        """Scorer result, or None after a timeout/crash (counted and logged)."""
        try:
            return self.scorer.call(kind, **args)
        except ScorerTimeout:
            self.counters["verifier_timeout"] += 1
            logger.warning(
                "%s: scorer timed out (limit %s s); answer judged incorrect",
                self.name,
                self.config.verifier_timeout_seconds,
            )
        except ScorerCrashed as error:
            self.counters["verifier_error"] += 1
            logger.warning("%s: scorer failed (%s); answer judged incorrect", self.name, error)
        return None

    def close(self) -> None:
        self.scorer.close()


# --- countdown


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


# --- reasoning_gym:<name>


class ReasoningGymTask(_IsolatedTask):
    """Any reasoning-gym data set, scored by its own score_answer (1.0 = correct) in the worker."""

    preload = ("reasoning_gym",)

    def __init__(self, config: TaskConfig) -> None:
        from reasoning_gym.factory import DATASETS

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
        import reasoning_gym

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
        if answer is None or len(answer) > self.config.max_answer_chars:
            return Verdict(NA, False)
        if self._grammar is not None and self._grammar.parse(answer) is None:
            return Verdict(answer, False)
        score = self._score("reasoning_gym", fields=problem.fields, answer=answer)
        return Verdict(answer, score == 1.0)


# --- math


class MathTask(_IsolatedTask):
    """Math word problems: last \\boxed{...} verified with math-verify against the gold answer."""

    name = "math"
    preload = ("math_verify",)

    def __init__(self, config: TaskConfig) -> None:
        if not config.data_path and not config.dataset_name:
            raise ConfigError("TaskConfig: task 'math' needs data_path or dataset_name")
        super().__init__(config)
        self._gold_ok: dict[str, bool] = {}  # gold text -> parseable (so NA answers still see a bad gold)

    def problems(self) -> list[Problem]:
        rows = self._load_rows()
        config = self.config
        for column in (config.problem_column, config.answer_column, config.id_column):
            if column is not None and rows and column not in rows[0]:
                raise ConfigError(
                    f"TaskConfig: column {column!r} not in the math data (columns: {sorted(rows[0])})"
                )
        indices = list(range(len(rows)))
        if 0 < config.num_problems < len(rows):
            indices = sorted(random.Random(config.seed).sample(indices, config.num_problems))
        problems = []
        for index in indices:
            row = rows[index]
            problem_id = f"math/{row[config.id_column] if config.id_column else index}"
            prompt = str(row[config.problem_column])
            if config.prompt_format == "chat":
                prompt += MATH_CHAT_INSTRUCTION
            problems.append(Problem(problem_id, prompt, {"answer": str(row[config.answer_column])}))
        return problems

    def _load_rows(self) -> list[dict]:
        config = self.config
        source = config.data_path or config.dataset_name
        try:
            if config.data_path:
                return _read_local_rows(config.data_path)
            import datasets

            return list(
                datasets.load_dataset(config.dataset_name, config.dataset_config, split=config.dataset_split)
            )
        except (OSError, ValueError) as error:  # missing file/data set, bad JSON/parquet, offline hub
            raise ConfigError(f"TaskConfig: cannot load math data {source!r}: {error}") from None

    def extract(self, completion: str) -> str | None:
        return last_boxed(completion) or None

    def verify(self, problem: Problem, answer: str | None) -> Verdict:
        gold = problem.fields["answer"]
        if answer is not None and len(answer) > self.config.max_answer_chars:
            answer = None
        if gold in self._gold_ok and (answer is None or not self._gold_ok[gold]):
            return Verdict(NA, False if self._gold_ok[gold] else None)
        result = self._score(
            "math",
            gold=gold,
            answer=answer,
            timeout_seconds=max(1, int(self.config.verifier_timeout_seconds / 3)),
        )
        if result is None:  # timeout/crash: counted in _score
            return Verdict(NA, False)
        if not result["gold_ok"]:
            if gold not in self._gold_ok:
                self.counters["gold_unparseable"] += 1
                logger.warning(
                    "math: gold answer of %s cannot be parsed (%r); problem skipped", problem.problem_id, gold
                )
            self._gold_ok[gold] = False
            return Verdict(NA, None)
        self._gold_ok[gold] = True
        return Verdict(result["answer"] or NA, bool(result["correct"]))


def _read_local_rows(path: str) -> list[dict]:
    """Rows of a local .jsonl (one object per line), .json (a list of objects) or .parquet file."""
    suffix = path.rsplit(".", 1)[-1].lower()
    if suffix == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix not in ("jsonl", "json"):
        raise ValueError(f"{path!r} is not a .jsonl, .json or .parquet file")
    with open(path, encoding="utf-8") as handle:
        if suffix == "json":
            rows = json.load(handle)
        else:
            rows = [json.loads(line) for line in handle if line.strip()]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path!r} must hold JSON objects (one per line for .jsonl, a list for .json)")
    return rows
