"""math: problems from a jsonl/parquet file or a `datasets` name; the last `\\boxed{...}` must pass
`probe.grammar.LatexGrammar` (an allow-list with bounded nesting and length), then is checked with
math-verify in the worker process (its signal timeouts then always run on a main thread).
"""

from __future__ import annotations

import json
import logging
import random

import datasets
import pyarrow.parquet as pq

from probe.cli import ConfigError
from probe.grammar import GrammarRejection, LatexGrammar
from probe.tasks.base import NA, Problem, Reason, TaskConfig, Verdict, _IsolatedTask, last_boxed

logger = logging.getLogger(__name__)

MATH_CHAT_INSTRUCTION = "\n\nPut your final answer within \\boxed{}."


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
            problems.append(Problem(problem_id, prompt, {"answer": str(row[config.answer_column])}))
        return problems

    def _load_rows(self) -> list[dict]:
        config = self.config
        source = config.data_path or config.dataset_name
        try:
            if config.data_path:
                return _read_local_rows(config.data_path)
            return list(
                datasets.load_dataset(config.dataset_name, config.dataset_config, split=config.dataset_split)
            )
        except (OSError, ValueError) as error:  # missing file/data set, bad JSON/parquet, offline hub
            raise ConfigError(f"TaskConfig: cannot load math data {source!r}: {error}") from None

    def extract(self, completion: str) -> str | None:
        return last_boxed(completion) or None

    def verify(self, problem: Problem, answer: str | None) -> Verdict:
        gold = problem.fields["answer"]
        unscored = Reason.NO_ANSWER if answer is None else None  # why an answer goes unscored
        if answer is not None:
            try:  # before math-verify: it parses with sympy, and falls back to inner parts of deep input
                self.grammar.check(answer)  # length (too_long) first, then characters, commands, depth
            except GrammarRejection as rejection:
                answer, unscored = None, Reason(rejection.reason)
        gold_unparseable = Verdict(NA, None, Reason.GOLD_UNPARSEABLE)
        if gold in self._gold_ok and (answer is None or not self._gold_ok[gold]):
            return Verdict(NA, False, unscored) if self._gold_ok[gold] else gold_unparseable
        # the scorer runs even without an answer, to learn whether the gold parses
        result = self._score(
            "math",
            gold=gold,
            answer=answer,
            timeout_seconds=max(1, int(self.config.verifier_timeout_seconds / 3)),
        )
        if isinstance(result, Reason):
            return Verdict(NA, False, result)
        if not result["gold_ok"]:
            if gold not in self._gold_ok:
                logger.warning(
                    "math: gold answer of %s cannot be parsed (%r); problem skipped", problem.problem_id, gold
                )
            self._gold_ok[gold] = False
            return gold_unparseable
        self._gold_ok[gold] = True
        if answer is None:
            return Verdict(NA, False, unscored)
        if not result["answer"]:  # math-verify found nothing to parse in the answer
            return Verdict(NA, False, Reason.OUTSIDE_GRAMMAR)
        return Verdict(result["answer"], bool(result["correct"]))


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
