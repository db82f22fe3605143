"""math: problems from a jsonl/parquet file or a `datasets` name; the last `\\boxed{...}` must pass
`probe.grammar.LatexGrammar` (an allow-list with bounded nesting and length), then is checked with
math-verify in the worker process (its signal timeouts then always run on a main thread).

Answer classes (docs/answer-classes.md): answers math-verify judges equal are one answer. Every
correct answer is in the gold's class, represented by the gold text itself (so two probe dirs of one
problem name it alike); wrong answers are grouped greedily, most frequent first.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence

import datasets
import pyarrow.parquet as pq

from probe.cli import ConfigError
from probe.grammar import GrammarRejection, LatexGrammar
from probe.tasks.base import (
    NA,
    AnswerForm,
    Problem,
    Reason,
    TaskConfig,
    Verdict,
    _IsolatedTask,
    last_boxed,
)

logger = logging.getLogger(__name__)

MATH_CHAT_INSTRUCTION = "\n\nPut your final answer within \\boxed{}."
# Wrong answers per clustering call: each is compared with every class found so far, so this bounds
# one call's work (a call past the verifier's time limit leaves its answers as classes of their own).
CLASS_CHUNK = 32
VERIFY_CHUNK = 32  # answers per verification call (a call past the limit is retried answer by answer)


class MathTask(_IsolatedTask):
    """Math word problems: last \\boxed{...} verified with math-verify against the gold answer."""

    name = "math"
    preload = ("math_verify",)

    def __init__(self, config: TaskConfig) -> None:
        if not config.data_path and not config.dataset_name:
            raise ConfigError("TaskConfig: task 'math' needs data_path or dataset_name")
        super().__init__(config)
        self._gold_ok: dict[str, bool] = {}  # gold text -> parseable (so NA answers still see a bad gold)
        self.grammar = LatexGrammar(max_depth=config.max_latex_depth, max_chars=config.max_answer_chars)

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
            problems.append(Problem(problem_id, prompt, {"answer": gold_text(row[config.answer_column])}))
        return problems

    def _load_rows(self) -> list[dict]:
        config = self.config
        if config.data_path:
            try:
                return _read_local_rows(config.data_path)
            except (OSError, ValueError) as error:  # missing file, bad JSON/parquet
                message = f"TaskConfig: cannot load math data {config.data_path!r}: {error}"
                raise ConfigError(message) from None
        try:
            return list(
                datasets.load_dataset(config.dataset_name, config.dataset_config, split=config.dataset_split)
            )
        except (OSError, ValueError) as error:  # unreachable hub (ConnectionError), unknown name or split
            raise ConfigError(unreachable_message(config, error)) from None

    def extract(self, completion: str) -> str | None:
        return last_boxed(completion) or None

    def answer_classes(self, problem: Problem, forms: Sequence[AnswerForm]) -> list[str]:
        """Correct answers: the gold text. Wrong answers, in order of (count descending, canonical
        answer): each joins the first class whose representative math-verify judges equal to it, else
        founds one and represents it. NA stays NA."""
        representative = [problem.fields["answer"] if f.correct else f.answer for f in forms]
        wrong = sorted(
            (i for i, f in enumerate(forms) if not f.correct and f.answer != NA and f.text is not None),
            key=lambda i: (-forms[i].count, forms[i].answer),
        )
        heads: list[int] = []  # forms representing a class of wrong answers, in founding order
        for start in range(0, len(wrong), CLASS_CHUNK):
            chunk = wrong[start : start + CLASS_CHUNK]
            result = self._score(
                "math_classes",
                representatives=[forms[h].text for h in heads],
                answers=[forms[i].text for i in chunk],
                timeout_seconds=max(1, int(self.config.verifier_timeout_seconds / 3)),
            )
            if isinstance(result, Reason):  # already logged by _score: these stay classes of their own
                continue
            members = [*heads, *chunk]  # the handler's indices point into this list
            for index, found in zip(chunk, result, strict=True):
                if members[found] == index:
                    heads.append(index)
                representative[index] = forms[members[found]].answer
        return representative

    def verify(self, problem: Problem, answer: str | None) -> Verdict:
        return self.verify_many(problem, [answer])[0]

    def verify_many(self, problem: Problem, answers: list[str | None]) -> list[Verdict]:
        """Verdicts of extracted answers (None: no answer), in order. Each must pass the LaTeX
        allow-list; the rest go to math-verify in the worker VERIFY_CHUNK at a time, so a problem
        costs one round trip, not one per answer (on a busy CPU each is tens of ms). A chunk whose
        call fails is retried answer by answer, so only the answer that timed out or crashed the
        scorer goes unscored. The gold is checked once (and warned about once) per gold text."""
        gold = problem.fields["answer"]
        unscored: dict[int, Reason] = {}  # why an answer goes unscored before any scorer sees it
        for index, answer in enumerate(answers):
            if answer is None:
                unscored[index] = Reason.NO_ANSWER
                continue
            try:  # before math-verify: it parses with sympy, and falls back to inner parts of deep input
                self.grammar.check(answer)  # length (too_long) first, then characters, commands, depth
            except GrammarRejection as rejection:
                unscored[index] = Reason(rejection.reason)
        checked = [i for i in range(len(answers)) if i not in unscored]
        verdicts: dict[int, Verdict] = {i: Verdict(NA, False, reason) for i, reason in unscored.items()}
        if self._gold_ok.get(gold) is False:
            return [Verdict(NA, None, Reason.GOLD_UNPARSEABLE)] * len(answers)
        # the scorer runs even without an answer to score, to learn whether the gold parses
        chunks = [checked[i : i + VERIFY_CHUNK] for i in range(0, len(checked), VERIFY_CHUNK)]
        for chunk in chunks or ([[]] if gold not in self._gold_ok else []):
            verdicts.update(self._verify_chunk(problem, gold, answers, chunk))
            if self._gold_ok.get(gold) is False:
                return [Verdict(NA, None, Reason.GOLD_UNPARSEABLE)] * len(answers)
        return [verdicts[i] for i in range(len(answers))]

    def _verify_chunk(
        self, problem: Problem, gold: str, answers: list, chunk: list[int]
    ) -> dict[int, Verdict]:
        result = self._score(
            "math_many",
            gold=gold,
            answers=[answers[i] for i in chunk],
            timeout_seconds=max(1, int(self.config.verifier_timeout_seconds / 3)),
        )
        if isinstance(result, Reason):
            if len(chunk) > 1:  # one answer past the limit (or crashing the scorer) must not sink the rest
                return {
                    i: v
                    for index in chunk
                    for i, v in self._verify_chunk(problem, gold, answers, [index]).items()
                }
            return {i: Verdict(NA, False, result) for i in chunk}
        if not result["gold_ok"]:
            if gold not in self._gold_ok:
                logger.warning(
                    "math: gold answer of %s cannot be parsed (%r); problem skipped", problem.problem_id, gold
                )
            self._gold_ok[gold] = False
            return {}
        self._gold_ok[gold] = True
        verdicts = {}
        for index, scored in zip(chunk, result["answers"], strict=True):
            if not scored["answer"]:  # math-verify found nothing to parse in the answer
                verdicts[index] = Verdict(NA, False, Reason.OUTSIDE_GRAMMAR)
            else:
                verdicts[index] = Verdict(scored["answer"], bool(scored["correct"]))
        return verdicts


def gold_text(value) -> str:
    """A gold answer as text: lists (OlympiadBench's final_answer) joined by ", ", numbers as written."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    return str(value)


def unreachable_message(config: TaskConfig, error: Exception) -> str:
    """One line naming the data set that did not load and how to pre-download it."""
    name, subset, split = config.dataset_name, config.dataset_config, config.dataset_split
    reason = " ".join(str(error).split())[:300]
    download = f"datasets.load_dataset({name!r}, {subset!r}, split={split!r}).to_parquet('data.parquet')"
    return (
        f"TaskConfig: math data set {name!r} (config {subset!r}, split {split!r}) cannot be loaded: "
        f'{reason}. Pre-download it where the Hugging Face Hub is reachable: python -c "import datasets; '
        f'{download}", then pass --data_path data.parquet (or fill the datasets cache there and set '
        "HF_HUB_OFFLINE=1 here)"
    )


def _read_local_rows(path: str) -> list[dict]:
    """Rows of a local .jsonl (one object per line), .json (a list of objects) or .parquet file."""
    suffix = path.rsplit(".", 1)[-1].lower()
    if suffix == "parquet":
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
