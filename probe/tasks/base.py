"""What every task shares: its config, problems, verdicts, the Task interface, answer extraction,
and the base of the tasks whose scorer runs in an isolated worker process.

`Task.judge` never raises on model output: anything it cannot score is `Verdict("NA", False, reason)`
with a `Reason`; the only place a scorer's failure is caught is `_IsolatedTask._score`.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from probe import grammar
from probe.sandbox import IsolatedScorer, ScorerCrashed, ScorerTimeout

logger = logging.getLogger(__name__)

NA = "NA"
PROMPT_FORMATS = ("compact", "chat")
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOXED = "\\boxed{"


@dataclass(frozen=True)
class Problem:
    problem_id: str  # stable; countdown: f"countdown/{'_'.join(map(str, numbers))}/{target}"
    prompt: str  # text given to the model
    fields: dict  # JSON-serialisable verifier inputs (countdown: {"numbers": [...], "target": int})
    domain: str = ""  # its domain in a suite (probe.tasks.suite); "" for a problem made by a task alone


class Reason(enum.StrEnum):
    """Why a verdict is NA or unscored (`Verdict.reason`; None on a verdict the verifier scored).

    The one vocabulary: the reward logs the count of each per generation batch as
    `rewards/<reward name>/<reason>`, the probe per problem (`reasons` in its record) and in total
    (`reasons` in summary.json). Adding a reason is one line here.
    """

    NO_ANSWER = "no_answer"  # nothing extracted: no answer tags / no \boxed{} / an empty completion
    TOO_LONG = grammar.TOO_LONG  # the extracted answer is longer than TaskConfig.max_answer_chars
    OUTSIDE_GRAMMAR = "outside_grammar"  # not an answer of the task's grammar (countdown's; math-verify's)
    # refused by an allow-list before a scorer that parses or evaluates text (probe.grammar)
    REJECTED_BY_GRAMMAR = grammar.REJECTED_BY_GRAMMAR
    TOO_DEEP = grammar.TOO_DEEP  # math: \boxed{} content nested deeper than TaskConfig.max_latex_depth
    VERIFIER_TIMEOUT = "verifier_timeout"  # the isolated scorer ran past verifier_timeout_seconds
    VERIFIER_ERROR = "verifier_error"  # the isolated scorer crashed
    GOLD_UNPARSEABLE = "gold_unparseable"  # the gold answer cannot be parsed (correct is None)


@dataclass(frozen=True)
class Verdict:
    answer: str  # canonical answer, or "NA" (no answer / unparseable / unscored)
    correct: bool | None  # None: gold answer unparseable (problem skipped, warned)
    reason: str | None = None  # why NA or unscored (a Reason, or the probe's "unfinished"); None: scored


@dataclass(frozen=True)
class AnswerForm:
    """One distinct canonical answer of a problem's samples, as the probe tallied it."""

    answer: str  # canonical answer (Verdict.answer), "NA" included
    text: str | None  # an extracted answer text that gave it (what a scorer can parse again)
    count: int  # samples
    correct: bool


def count_reasons(verdicts: Iterable[Verdict]) -> dict[str, int]:
    """reason -> how many verdicts carry it (scored verdicts, reason None, are not counted)."""
    counts = Counter(str(v.reason) for v in verdicts if v.reason is not None)
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class SFTExample:
    """One supervised example for an embedded base model: a problem's prompt and every valid completion."""

    prompt: str  # the compact prompt text
    completions: tuple[str, ...]  # every valid completion (no EOS); each SFT row draws one uniformly

    def draw(self, rng: random.Random) -> tuple[str, str]:
        """(prompt, completion) text of one SFT row."""
        return self.prompt, rng.choice(self.completions)


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
    reasoning_gym_code_scorers: list[str] = field(
        default_factory=list,
        metadata={
            "help": "reasoning_gym:<name>: data sets whose scorers need more than an answer grammar "
            "(kind 'code' in probe/scorer_audit.py, e.g. composite) to allow anyway, by name. Each call "
            "then runs in a fresh confined process; an answer that runs code can still fake its own verdict."
        },
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
    max_latex_depth: int = field(
        default=16,
        metadata={"help": "math: \\boxed{} content with brackets/braces nested deeper is NA (too_deep)."},
    )
    verifier_timeout_seconds: float = field(
        default=5.0, metadata={"help": "Wall-clock limit per scorer call."}
    )
    verifier_memory_mb: int = field(
        default=4096, metadata={"help": "Address-space limit of the scorer process."}
    )


class Task:
    """A task: problems, prompt, answer extraction, canonical form and verification."""

    name: str = ""
    # Characters of every compact prompt and completion, for a char-level embedded base model
    # (train.build_base); "" where the task has no embedded base model.
    alphabet: str = ""

    def __init__(self, config: TaskConfig) -> None:
        self.config = config

    def problems(self) -> list[Problem]:
        """Seeded, deterministic problem list."""
        raise NotImplementedError

    def extract(self, completion: str) -> str | None:
        """The raw answer text of a completion, or None when it has none."""
        raise NotImplementedError

    def verify(self, problem: Problem, answer: str | None) -> Verdict:
        """Verdict for an extracted answer (None = no answer); never raises on the answer."""
        raise NotImplementedError

    def follows_format(self, completion: str) -> bool:
        """Whether the completion's answer is in the task's answer format (for a format reward)."""
        return self.extract(completion) is not None

    def judge(self, problem: Problem, completion: str) -> Verdict:
        return self.judge_many(problem, [completion])[0]

    def verify_many(self, problem: Problem, answers: list[str | None]) -> list[Verdict]:
        """Verdicts of extracted answers, in order (a task whose scorer takes a batch overrides this)."""
        return [self.verify(problem, answer) for answer in answers]

    def judge_many(self, problem: Problem, completions: list[str]) -> list[Verdict]:
        """Verdicts in order; each distinct extracted answer is verified once (`verify_many`)."""
        answers = [self.extract(completion) for completion in completions]
        distinct = list(dict.fromkeys(answers))
        verdict_of = dict(zip(distinct, self.verify_many(problem, distinct), strict=True))
        return [verdict_of[answer] for answer in answers]

    def answer_classes(self, problem: Problem, forms: Sequence[AnswerForm]) -> list[str]:
        """The class representative of each form: answers the task judges equal are one answer for the
        answer-level metrics (docs/answer-classes.md). Default: every canonical answer is its own class."""
        return [form.answer for form in forms]

    def sft_examples(self, count: int, seed: int, held_out: Sequence[Problem]) -> list[SFTExample]:
        """`count` seeded SFT examples drawn like `problems()`, none of them one of `held_out`
        (only tasks with an `alphabet` have them)."""
        raise NotImplementedError(f"task {self.name!r} has no SFT examples")

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
    per_call: bool = False  # a fresh confined process per call (scorers that run answers as code)

    def __init__(self, config: TaskConfig) -> None:
        super().__init__(config)
        self.scorer = IsolatedScorer(
            self.preload, config.verifier_timeout_seconds, config.verifier_memory_mb, per_call=self.per_call
        )

    def _score(self, kind: str, **args) -> object:
        """The scorer's result, or the Reason it gave none: the one place a verifier's failure is
        caught (it restarts on the next call); the caller turns the Reason into an unscored verdict."""
        try:
            return self.scorer.call(kind, **args)
        except ScorerTimeout:
            logger.warning(
                "%s: scorer timed out (limit %s s); answer unscored",
                self.name,
                self.config.verifier_timeout_seconds,
            )
            return Reason.VERIFIER_TIMEOUT
        except ScorerCrashed as error:
            logger.warning("%s: scorer failed (%s); answer unscored", self.name, error)
            return Reason.VERIFIER_ERROR

    def close(self) -> None:
        self.scorer.close()
