"""reasoning-gym's scorers, audited: which evaluate answer text, and the grammar each answer must pass.

Every data set reasoning-gym lists has a row, reviewed by reading its `score_answer` (and the helpers
it calls) in reasoning-gym AUDITED_VERSION. A test fails when reasoning-gym lists a data set that has
no row, or when the installed version differs: re-audit then. Kinds:

- COMPARES (a): compares strings or numbers (`==`, `float`, `int`, `Decimal`, `Fraction`,
  `json.loads`, its own small parsers); answer text is never evaluated. Scored in the shared worker.
- GRAMMAR (b): evaluates the text (Python `eval`, sympy `parse_expr`), but a strict allow-list covers
  every answer that can score 1.0; the answer must pass `answer_grammar(...)` first, else it is NA
  (`rejected_by_grammar`). Scored in the shared worker.
- CODE (c): needs more than a grammar. Refused unless the recipe opts in by name
  (`TaskConfig.reasoning_gym_code_scorers`); then each call runs in a fresh, confined process.
  Such a scorer runs hostile answers as code by design: the confinement keeps them from the host and
  from other answers, but an answer that runs code can still fake its own verdict.

Four GRAMMAR scorers (string_insertion, spiral_matrix, binary_matrix, n_queens) `eval` the answer only
after an exact-match test fails, for partial credit below 1.0; their grammars admit exactly the
exact-match forms, so refusing the rest loses no verdict (leash counts only a score of 1.0 correct).

The scorer must see the very entry the prompt was made from (reasoning-gym's generators depend on
the hash seed, so regenerating it in another process can give another problem): `encode_entry`
turns it into JSON that `decode_entry` gives back exactly (tuples, sets, non-string keys included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from probe.expression import ExpressionError, ExpressionLimits, parse_expression
from probe.grammar import REJECTED_BY_GRAMMAR, GrammarRejection, TokenGrammar

AUDITED_VERSION = "0.1.25"
COMPARES, GRAMMAR, CODE = "compares", "grammar", "code"


@dataclass(frozen=True)
class Audit:
    kind: str  # COMPARES | GRAMMAR | CODE
    note: str  # what the scorer does with the answer text
    family: str | None = None  # GRAMMAR: which answer grammar (see answer_grammar)


def _a(note: str) -> Audit:
    return Audit(COMPARES, note)


def _b(family: str, note: str) -> Audit:
    return Audit(GRAMMAR, note, family)


_EQUAL = "default ProceduralDataset scorer: string equality, or partial credit for containing the answer"

REASONING_GYM_SCORERS: dict[str, Audit] = {
    "ab": _a("string equality"),
    "acre": _a(_EQUAL),
    "advanced_geometry": _a("float() of the text / of split coordinates, numpy rounding"),
    "aiw": _a(_EQUAL),
    "arc_1d": _a(_EQUAL),
    "arc_agi": _a("parse_board: split into cells, alphabet.index per cell"),
    "base_conversion": _a(_EQUAL),
    "basic_arithmetic": _a(_EQUAL),
    "bf": _a(_EQUAL),
    "binary_alternation": _a(_EQUAL),
    "binary_matrix": _b("digit_grid", "exact match, else eval(answer) for 0.1 partial credit"),
    "bitwise_arithmetic": _a("int(answer, 0); eval() only of the entry's own problem text"),
    "boxnet": _a("json.loads, then simulates the moves"),
    "caesar_cipher": _a(_EQUAL),
    "calendar_arithmetic": _a("string comparison / int()"),
    "chain_sum": _a("compute_decimal_reward: Decimal() equality"),
    "circuit_logic": _a("string equality"),
    "codeio": _a("string equality, json.loads of the text (exec() only of its own data at generation)"),
    "coin_flip": _a("Fraction() of the text"),
    "color_cube_rotation": _a("lower-cased string equality"),
    "complex_arithmetic": _a("own parser: string edits, complex()/float()"),
    "composite": Audit(
        CODE, "delegates to its member data sets' scorers, any of which may evaluate the answer"
    ),
    "count_bits": _a(_EQUAL),
    "count_primes": _a(_EQUAL),
    "countdown": _b("arithmetic", "sympy parse_expr(answer), i.e. Python eval"),
    "course_schedule": _a(_EQUAL),
    "cryptarithm": _a("split on ',' and '=', int()"),
    "decimal_arithmetic": _a("Decimal() of the text"),
    "decimal_chain_sum": _a("Decimal() of the text"),
    "dice": _a("lower-cased string equality"),
    "emoji_mystery": _a("string equality, per-character comparison"),
    "family_relationships": _a("lower-cased string equality"),
    "figlet_font": _a("string equality, per-character comparison"),
    "fraction_simplification": _a("regex and int() of the fraction parts"),
    "futoshiki": _a("string equality, digits per line"),
    "game_of_life": _a("json.loads, cell comparison"),
    "game_of_life_halting": _a("bool(answer) == bool(gold)"),
    "gcd": _a(_EQUAL),
    "graph_color": _a("json.loads, checks the colouring"),
    "group_anagrams": _a("json.loads, sorted comparison"),
    "gsm_symbolic": _a("regex for a number, float()"),
    "intermediate_integration": _b("integration", "sympy parse_expr(answer) with the variable and C"),
    "isomorphic_strings": _a(_EQUAL),
    "jugs": _a("json.loads, simulates the pours"),
    "kakurasu": _a("own grid parser, int()"),
    "knight_swap": _a("json.loads, simulates the moves"),
    "knights_knaves": _a("own word parser, set comparison"),
    "largest_island": _a(_EQUAL),
    "lcm": _a(_EQUAL),
    "leg_counting": _a(_EQUAL),
    "letter_counting": _a(_EQUAL),
    "letter_jumble": _a("lower-cased string equality, per-word comparison"),
    "list_functions": _a(_EQUAL),
    "mahjong_puzzle": _a(_EQUAL),
    "manipulate_matrix": _a("string equality after whitespace normalisation"),
    "maze": _a(_EQUAL),
    "mini_sudoku": _a("string equality, digits per line"),
    "modulo_grid": _a(_EQUAL),
    "n_queens": _b("queens_board", "exact match, else eval(answer) for 0.5 partial credit"),
    "needle_haystack": _a("lower-cased string equality"),
    "number_filtering": _a(_EQUAL),
    "number_format": _a("float() of the text"),
    "number_sequence": _a(_EQUAL),
    "number_sorting": _a("json.loads of the text (eval() only of the entry's own answer)"),
    "palindrome_generation": _a("string comparison"),
    "palindrome_partitioning": _a("json.loads, set comparison"),
    "path_star": _a("whitespace-normalised string equality"),
    "polynomial_equations": _a("split on ',', float()"),
    "polynomial_multiplication": _b("polynomial", "sympy parse_expr(answer), i.e. Python eval"),
    "pool_matrix": _a("numpy.loadtxt of the text"),
    "power_function": _a("Decimal() of the text"),
    "prime_factorization": _a("split on '×', int()"),
    "products": _a("compute_decimal_reward: Decimal() equality"),
    "propositional_logic": _a("own recursive-descent parser of the formula"),
    "puzzle24": _b("arithmetic", "sympy parse_expr(answer), i.e. Python eval"),
    "quantum_lock": _a("regex for A-C button presses, simulates them"),
    "ransom_note": _a(_EQUAL),
    "rearc": _a("parse_board: split into cells, alphabet.index per cell"),
    "rectangle_count": _a("int() of the text"),
    "rotate_matrix": _a(_EQUAL),
    "rotten_oranges": _a(_EQUAL),
    "rubiks_cube": _a("splits moves (repeat counts expand: bounded by the worker's limits)"),
    "rush_hour": _a("regex for moves, simulates them"),
    "self_reference": _a("string equality"),
    "sentence_reordering": _a("string equality, per-word comparison"),
    "shortest_path": _a("string equality, checks the path on the grid"),
    "simple_equations": _a(_EQUAL),
    "simple_geometry": _a(_EQUAL),
    "simple_integration": _b("integration", "sympy parse_expr(answer) with the variable and C"),
    "sokoban": _a("feeds each character to the game as a key"),
    "spell_backward": _a("lower-cased string equality, per-character comparison"),
    "spiral_matrix": _b("digit_grid", "exact match, else eval(answer) for 0.1 partial credit"),
    "string_insertion": _b("letters", "exact match, else eval(answer) for 0.1 partial credit"),
    "string_manipulation": _a(_EQUAL),
    "string_splitting": _a(_EQUAL),
    "string_synthesis": _a(_EQUAL),
    "sudoku": _a("string equality, digits per line"),
    "survo": _a("own grid parser, int()"),
    "syllogism": _a(_EQUAL),
    "time_intervals": _a("split and int() of days / hh:mm:ss"),
    "tower_of_hanoi": _a("regex per move line, simulates the moves"),
    "tsumego": _a("upper-cased string equality, regex"),
    "word_ladder": _a("split on ',', word-set lookups"),
    "word_sequence_reversal": _a(_EQUAL),
    "word_sorting": _a("split on ',', list comparison"),
    "zebra_puzzles": _a("lower-cased string equality"),
}


def create_dataset(name: str, seed: int, size: int, kwargs: dict):
    """reasoning_gym.create_dataset from JSON-shaped kwargs (composite's member specs arrive as dicts)."""
    import reasoning_gym  # why: heavy (sympy, numpy, data files): only reasoning_gym tasks and their worker

    if name == "composite" and isinstance(kwargs.get("datasets"), list):
        from reasoning_gym.composite import DatasetSpec

        kwargs = {**kwargs, "datasets": [DatasetSpec(**spec) for spec in kwargs["datasets"]]}
    return reasoning_gym.create_dataset(name, seed=seed, size=size, **kwargs)


# --- answer grammars of the GRAMMAR families

_SYMPY_OPERATORS = ("**", "*", "/", "+", "-")
# Functions and constants an antiderivative may use, resolved by parse_expr to sympy's own objects.
# Integral is left out on purpose: "Integral(f, x) + C" differentiates back to any f.
INTEGRATION_NAMES = frozenset(
    "sin cos tan cot sec csc asin acos atan sinh cosh tanh asinh acosh atanh exp log ln sqrt pi E".split()
)
_ARITHMETIC = TokenGrammar(operators=("+", "-", "*", "/"), brackets="(", max_depth=16, max_chars=200)
_ARITHMETIC_LIMITS = ExpressionLimits(max_chars=200, max_tokens=100, max_depth=16, max_digits=6)
_FIXED_FAMILIES = {
    # spiral_matrix / binary_matrix: rows of non-negative integers
    "digit_grid": TokenGrammar(blanks=" \t\n"),
    # n_queens: rows of "Q" and "_" cells
    "queens_board": TokenGrammar(names=frozenset({"Q", "_"}), blanks=" \t\n"),
    # string_insertion: the data set's vocabulary, A-E (a run of them is no Python builtin)
    "letters": TokenGrammar(name_alphabet=frozenset("ABCDE")),
}


class ArithmeticGrammar:
    """countdown / puzzle24: probe.expression's bounded arithmetic grammar (integers, + - * /, parens)."""

    def check(self, text: str) -> None:
        _ARITHMETIC.check(text)  # reasons for length and depth; the parser below decides the rest
        try:
            parse_expression(text, _ARITHMETIC_LIMITS)
        except ExpressionError as error:
            raise GrammarRejection(REJECTED_BY_GRAMMAR, str(error)) from None


def answer_grammar(dataset: str, metadata: dict) -> TokenGrammar | ArithmeticGrammar | None:
    """The grammar an answer to this entry must pass before the scorer sees it (None: COMPARES)."""
    audit = REASONING_GYM_SCORERS[dataset]
    if audit.kind != GRAMMAR:
        return None
    if audit.family == "arithmetic":
        return ArithmeticGrammar()
    if audit.family == "polynomial":
        names = frozenset(str(name) for name in metadata["variables"])
        return TokenGrammar(operators=_SYMPY_OPERATORS, names=names, brackets="(", decimals=True)
    if audit.family == "integration":
        names = INTEGRATION_NAMES | {str(metadata["variable"]), "C"}
        return TokenGrammar(operators=_SYMPY_OPERATORS, names=names, brackets="(", decimals=True)
    return _FIXED_FAMILIES[audit.family]


# --- entries as JSON, losslessly

_TAGS = ("$tuple", "$set", "$frozenset", "$dict")


def encode_entry(value: Any) -> Any:
    """A JSON-serialisable tree that decode_entry turns back into an equal value of the same types."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [encode_entry(item) for item in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode_entry(item) for item in value]}
    if isinstance(value, set | frozenset):
        tag = "$set" if isinstance(value, set) else "$frozenset"
        return {tag: [encode_entry(item) for item in sorted(value, key=repr)]}
    if isinstance(value, dict):
        if all(isinstance(key, str) and not key.startswith("$") for key in value):
            return {key: encode_entry(item) for key, item in value.items()}
        return {"$dict": [[encode_entry(key), encode_entry(item)] for key, item in value.items()]}
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and type(value).__module__ == "numpy":
        return encode_entry(item())
    raise TypeError(f"cannot carry a {type(value).__name__} in a problem's fields: {value!r:.80}")


def decode_entry(tree: Any) -> Any:
    if isinstance(tree, list):
        return [decode_entry(item) for item in tree]
    if isinstance(tree, dict):
        if len(tree) == 1 and next(iter(tree)) in _TAGS:
            ((tag, items),) = tree.items()
            if tag == "$dict":
                return {decode_entry(key): decode_entry(item) for key, item in items}
            return {"$tuple": tuple, "$set": set, "$frozenset": frozenset}[tag](
                decode_entry(item) for item in items
            )
        return {key: decode_entry(item) for key, item in tree.items()}
    return tree
