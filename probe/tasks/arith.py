"""arith: the project's own arithmetic problem generator, the data of the embedded math base model.

Not a task of its own: its problems are written to local .jsonl files in the real math recipes' schema
(`id`, `problem`, `answer`) and read back, trained and probed by the `math` task (last `\\boxed{}`,
math-verify in the worker), exactly as a real data set would be. `train.build_base` writes them (the
probe set, held out, and the RL training set) and trains the base on `ArithData.sft_examples`.

Problems are short expressions over small integers and fractions ("-3/4+5/6=", "7*-8="); gold
answers are integers, negative numbers and reduced fractions written `\\frac{a}{b}`. Each SFT
example carries every answer form the base model learns to write for its value (`\\frac{5}{4}`,
`5/4`, `1.25`; `-\\frac{3}{4}`, `\\frac{-3}{4}`; `2`, `2.0`), drawn uniformly per SFT row, so the
same answer class appears under several strings and math-verify's equivalence matters.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from probe.cli import ConfigError
from probe.tasks.base import Problem, SFTExample

# Every character of a prompt ("-3/4+5/6=") and completion ("\boxed{-\frac{3}{4}}", "\boxed{1.25}");
# the order is the embedded base model's vocabulary order (after its special tokens).
ALPHABET = "0123456789+-*/=.()\\{}abcdefrox"
KINDS = ("add", "sub", "mul", "div", "frac_add", "frac_sub", "frac_mul")
PROBE_STREAM, TRAIN_STREAM, SFT_STREAM = 1, 2, 3  # independent seeded streams of one generator
MAX_DECIMALS = 3  # a fraction is also written as a decimal when it terminates within this many places


@dataclass
class ArithConfig:
    """The arithmetic generator of the embedded math base (train.build_base, data_generator: arith)."""

    arith_kinds: list[str] = field(
        default_factory=lambda: list(KINDS),
        metadata={
            "help": "Problem kinds, drawn uniformly: add, sub, mul (integers), div (a/b as a fraction), "
            "frac_add, frac_sub, frac_mul (two fractions)."
        },
    )
    arith_max_int: int = field(default=20, metadata={"help": "Integer operands lie in [-max, max]."})
    arith_max_factor: int = field(default=12, metadata={"help": "mul operands lie in [-max, max]."})
    arith_max_denominator: int = field(
        default=9, metadata={"help": "Fraction operands a/b: b in [2, max], |a| in [1, max]."}
    )
    arith_probe_problems: int = field(
        default=200, metadata={"help": "Rows of the probe set (the probe recipe's data_path), held out."}
    )
    arith_train_problems: int = field(
        default=4000, metadata={"help": "Rows of the RL training set (arith_train_path), probe set held out."}
    )
    arith_train_path: str = field(
        default="", metadata={"help": "Where the RL training set is written (.jsonl); empty: not written."}
    )

    def __post_init__(self) -> None:
        if not self.arith_kinds or not set(self.arith_kinds) <= set(KINDS):
            kinds = self.arith_kinds
            raise ConfigError(f"ArithConfig.arith_kinds: {kinds} is not a non-empty subset of {KINDS}")
        lowest = {"arith_max_int": 1, "arith_max_factor": 1, "arith_max_denominator": 2,
                  "arith_probe_problems": 1, "arith_train_problems": 0}  # fmt: skip
        for name, low in lowest.items():
            if getattr(self, name) < low:
                raise ConfigError(f"ArithConfig.{name} must be >= {low}, got {getattr(self, name)}")


def latex(value: Fraction) -> str:
    """The gold form of a value: an integer, or a reduced `\\frac{a}{b}` with the sign in front."""
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def answer_forms(value: Fraction) -> tuple[str, ...]:
    """Every string the base model is taught for `value` (without the \\boxed{}), all equal under
    math-verify: integers also as "n.0"; fractions as \\frac, a/b, and a decimal when it terminates."""
    if value.denominator == 1:
        return (str(value.numerator), f"{value.numerator}.0")
    sign, numerator, denominator = ("-" if value < 0 else ""), abs(value.numerator), value.denominator
    forms = [
        f"{sign}\\frac{{{numerator}}}{{{denominator}}}",
        f"{sign}{numerator}/{denominator}",
    ]
    if sign:
        forms.append(f"\\frac{{-{numerator}}}{{{denominator}}}")
    decimal = _decimal(value)
    if decimal is not None:
        forms.append(decimal)
    return tuple(forms)


def _decimal(value: Fraction) -> str | None:
    scaled = value * 10**MAX_DECIMALS
    if scaled.denominator != 1:
        return None
    whole, part = divmod(abs(scaled.numerator), 10**MAX_DECIMALS)
    return ("-" if value < 0 else "") + f"{whole}.{part:0{MAX_DECIMALS}d}".rstrip("0")


def _right(text: str) -> str:
    """A right operand as written in a problem: a negative one in parentheses ("7*(-8)")."""
    return f"({text})" if text.startswith("-") else text


class ArithData:
    """Seeded arithmetic problems (text, exact value) and the SFT examples of the embedded math base."""

    alphabet = ALPHABET

    def __init__(self, config: ArithConfig, seed: int) -> None:
        self.config = config
        self.seed = seed

    def draw(self, rng: random.Random) -> tuple[str, Fraction]:
        """One problem: (text ending in "=", exact value)."""
        config = self.config
        kind = rng.choice(config.arith_kinds)
        if kind in ("add", "sub"):
            a, b = (rng.randint(-config.arith_max_int, config.arith_max_int) for _ in range(2))
            op = "+" if kind == "add" else "-"
            return f"{a}{op}{_right(str(b))}=", Fraction(a + b if op == "+" else a - b)
        if kind == "mul":
            a, b = (rng.randint(-config.arith_max_factor, config.arith_max_factor) for _ in range(2))
            return f"{a}*{_right(str(b))}=", Fraction(a * b)
        if kind == "div":
            a = rng.choice([x for x in range(-config.arith_max_int, config.arith_max_int + 1) if x])
            b = rng.randint(2, config.arith_max_denominator)
            return f"{a}/{b}=", Fraction(a, b)
        (left_text, left), (right_text, right) = self._fraction(rng), self._fraction(rng)
        op = {"frac_add": "+", "frac_sub": "-", "frac_mul": "*"}[kind]
        value = left + right if op == "+" else left - right if op == "-" else left * right
        return f"{left_text}{op}{_right(right_text)}=", value

    def _fraction(self, rng: random.Random) -> tuple[str, Fraction]:
        """("a/b", its value): b in [2, max], |a| in [1, max], a not a multiple of b; written as drawn
        ("2/4"), exact as a value."""
        limit = self.config.arith_max_denominator
        while True:
            b = rng.randint(2, limit)
            a = rng.choice([x for x in range(-limit, limit + 1) if x])
            if a % b:
                return f"{a}/{b}", Fraction(a, b)

    def problems(self, stream: int, count: int, held_out: set[str] = frozenset()) -> list[tuple]:
        """`count` distinct (text, value) problems of one seeded stream, none with a text in `held_out`."""
        rng = random.Random(self.seed * 1_000_003 + stream)
        found: dict[str, Fraction] = {}
        for _ in range(100 * count + 1000):
            if len(found) == count:
                break
            text, value = self.draw(rng)
            if text not in held_out and text not in found:
                found[text] = value
        if len(found) < count:
            raise ConfigError(
                f"ArithConfig: only {len(found)} distinct problems of {count} requested; widen the ranges"
            )
        return list(found.items())

    def rows(self, stream: int, count: int, prefix: str, held_out: set[str] = frozenset()) -> list[dict]:
        """Rows in the real math recipes' schema: id, problem, answer (the gold, LaTeX)."""
        return [
            {"id": f"{prefix}-{index:06d}", "problem": text, "answer": latex(value)}
            for index, (text, value) in enumerate(self.problems(stream, count, held_out))
        ]

    def probe_rows(self) -> list[dict]:
        return self.rows(PROBE_STREAM, self.config.arith_probe_problems, "probe")

    def train_rows(self, held_out: Sequence[Problem]) -> list[dict]:
        texts = {p.prompt for p in held_out}
        return self.rows(TRAIN_STREAM, self.config.arith_train_problems, "train", texts)

    def sft_examples(self, count: int, seed: int, held_out: Sequence[Problem]) -> list[SFTExample]:
        """`count` seeded SFT examples (repeats kept, like countdown's), none with a held-out problem
        text; each completion is `\\boxed{form}` for one of the value's forms."""
        texts = {p.prompt for p in held_out}
        rng = random.Random(seed * 1_000_003 + SFT_STREAM)
        examples = []
        while len(examples) < count:
            text, value = self.draw(rng)
            if text in texts:
                continue
            examples.append(SFTExample(text, tuple(f"\\boxed{{{form}}}" for form in answer_forms(value))))
        return examples


def dump_rows(rows: Sequence[dict]) -> bytes:
    """The .jsonl bytes of `rows` (one object per line, keys sorted): deterministic for a config."""
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
