"""Countdown answer grammar: bounded tokenizer, recursive-descent parser, exact evaluation, canonical form.

Model output is untrusted, so nothing here calls `eval`, `ast`, or sympy. Grammar (spaces and tabs
between tokens are ignored):

    expression := term (("+" | "-") term)*
    term       := unary (("*" | "/") unary)*
    unary      := "-"* atom
    atom       := NUMBER | "(" expression ")"
    NUMBER     := [0-9]+ (no leading zeros, at most `max_digits` digits)

Every limit (characters, tokens, parenthesis depth, digits per number) is checked during a single
linear scan *before* parsing, so a hostile text costs O(len(text)) and at most `max_chars` of it is
read. Trees are nested tuples: `("num", value)`, `("neg", child)`, `(op, left, right)`; their depth is
bounded by `max_tokens` because binary chains and unary minus chains are parsed iteratively.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

DIGITS = frozenset("0123456789")  # ASCII only: str.isdigit() would also accept "²" and "٣"
OPERATORS = frozenset("+-*/")
_BLANKS = frozenset(" \t")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "num": 4}
_RECURSION_SAFE_TOKENS = 400  # evaluation/printing recurse once per tree level (<= tokens)


class ExpressionError(ValueError):
    """The text is not an expression of the countdown grammar (or breaks a limit)."""


@dataclass(frozen=True)
class ExpressionLimits:
    """Hard limits checked before parsing; the values come from TaskConfig."""

    max_chars: int
    max_tokens: int
    max_depth: int
    max_digits: int

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_tokens", "max_depth", "max_digits"):
            if getattr(self, name) < 1:
                raise ValueError(f"ExpressionLimits.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_tokens > _RECURSION_SAFE_TOKENS:
            raise ValueError(
                f"ExpressionLimits.max_tokens must be <= {_RECURSION_SAFE_TOKENS}, got {self.max_tokens}"
            )


# --- tokenize (all limits enforced here)


def tokenize(text: str, limits: ExpressionLimits) -> list[str]:
    """Split `text` into number/operator/parenthesis tokens, enforcing every limit in one pass."""
    if len(text) > limits.max_chars:
        raise ExpressionError(f"longer than {limits.max_chars} characters")
    tokens: list[str] = []
    depth = 0
    position = 0
    while position < len(text):
        char = text[position]
        if char in _BLANKS:
            position += 1
            continue
        if char in DIGITS:
            end = position
            while end < len(text) and text[end] in DIGITS:
                end += 1
            token = text[position:end]
            if len(token) > limits.max_digits:
                raise ExpressionError(f"number with more than {limits.max_digits} digits")
            if len(token) > 1 and token[0] == "0":
                raise ExpressionError(f"number with a leading zero: {token!r}")
            position = end
        elif char in OPERATORS or char in "()":
            token = char
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth > limits.max_depth:
                raise ExpressionError(f"parentheses nested deeper than {limits.max_depth}")
            if depth < 0:
                raise ExpressionError("unbalanced ')'")
            position += 1
        else:
            raise ExpressionError(f"character {char!r} is not allowed")
        tokens.append(token)
        if len(tokens) > limits.max_tokens:
            raise ExpressionError(f"more than {limits.max_tokens} tokens")
    if depth != 0:
        raise ExpressionError("unbalanced '('")
    if not tokens:
        raise ExpressionError("empty expression")
    return tokens


# --- parse (recursive descent over a bounded token list)


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ExpressionError("expression ends early")
        self.position += 1
        return token

    def expression(self) -> tuple:
        node = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            node = (op, node, self.term())
        return node

    def term(self) -> tuple:
        node = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            node = (op, node, self.unary())
        return node

    def unary(self) -> tuple:
        negations = 0
        while self.peek() == "-":
            self.take()
            negations += 1
        node = self.atom()
        for _ in range(negations):
            node = ("neg", node)
        return node

    def atom(self) -> tuple:
        token = self.take()
        if token == "(":
            node = self.expression()
            if self.take() != ")":
                raise ExpressionError("expected ')'")
            return node
        if token[0] in DIGITS:
            return ("num", int(token))
        raise ExpressionError(f"unexpected {token!r}")


def parse_expression(text: str, limits: ExpressionLimits) -> tuple:
    """Parse `text` into a tree; raise ExpressionError for anything outside the grammar or limits."""
    parser = _Parser(tokenize(text, limits))
    tree = parser.expression()
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected {parser.peek()!r} after a complete expression")
    return tree


# --- evaluate, collect numbers, print canonically


def evaluate(tree: tuple) -> Fraction:
    """Exact rational value; raises ZeroDivisionError on division by zero."""
    kind = tree[0]
    if kind == "num":
        return Fraction(tree[1])
    if kind == "neg":
        return -evaluate(tree[1])
    left, right = evaluate(tree[1]), evaluate(tree[2])
    if kind == "+":
        return left + right
    if kind == "-":
        return left - right
    if kind == "*":
        return left * right
    return left / right


def numbers_used(tree: tuple) -> list[int]:
    """The literal numbers of the expression, left to right (unary minus does not change them)."""
    if tree[0] == "num":
        return [tree[1]]
    return [number for child in tree[1:] for number in numbers_used(child)]


def canonical(tree: tuple) -> str:
    """Minimal-parenthesis text that parses back to the same tree.

    Parentheses stay only where the tree needs them: a left operand of lower precedence, a right
    operand of lower *or equal* precedence (left-associativity), or a binary operand of unary
    minus. So `(3*5)+2` -> `3*5+2`, `3-(5-2)` and `(3+5)*2` keep theirs, `3+(5+2)` keeps its
    (a different tree from `3+5+2`, though equal in value), and operand order is never changed.
    """
    kind = tree[0]
    if kind == "num":
        return str(tree[1])
    if kind == "neg":
        child = tree[1]
        return "-" + _wrap(child, _PRECEDENCE[child[0]] < _PRECEDENCE["neg"])
    left, right = tree[1], tree[2]
    precedence = _PRECEDENCE[kind]
    return (
        _wrap(left, _PRECEDENCE[left[0]] < precedence)
        + kind
        + _wrap(right, _PRECEDENCE[right[0]] <= precedence)
    )


def _wrap(tree: tuple, parenthesise: bool) -> str:
    text = canonical(tree)
    return f"({text})" if parenthesise else text
