"""Specs for probe.grammar: the allow-lists answers pass before a scorer that parses text."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe.grammar import (
    REJECTED_BY_GRAMMAR,
    TOO_DEEP,
    TOO_LONG,
    GrammarRejection,
    LatexGrammar,
    TokenGrammar,
)

POLYNOMIAL = TokenGrammar(
    operators=("**", "*", "/", "+", "-"), names=frozenset("xy"), brackets="(", decimals=True
)


def reason(grammar, text):
    try:
        grammar.check(text)
    except GrammarRejection as rejection:
        return rejection.reason
    return None


@pytest.mark.parametrize("text", ["2240*x**5 - 896*x**4", "-(x + 2.5)*(y - 1)/3", "x", "  x**2\t+ 1 ", "2x"])
def test_token_grammar_accepts_its_tokens(text):
    assert reason(POLYNOMIAL, text) is None


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')", "x.__class__", "().__class__", "'x'", '"x"', "eval(x)", "z", "xy", "x_1", "__",
        "x[0]", "{x}", "lambda: x", "x if x else y", "1e5", "0x10", "1j", "x @ y", "x; y", "x, y", "x\n+1",
        "ｘ", "٣", "x\x00", "1.x", "x.real", "(x", "x)", ")x(",
    ],
)  # fmt: skip
def test_token_grammar_rejects_everything_else(text):
    assert reason(POLYNOMIAL, text) == REJECTED_BY_GRAMMAR


def test_token_grammar_bounds_depth_and_length():
    grammar = TokenGrammar(operators=("+",), brackets="(", max_depth=3, max_chars=20)
    assert reason(grammar, "(((1)))") is None
    assert reason(grammar, "((((1))))") == TOO_DEEP
    assert reason(grammar, "1+" * 10 + "1") == TOO_LONG


def test_token_grammar_names_from_an_alphabet_and_board_cells():
    letters = TokenGrammar(name_alphabet=frozenset("ABCDE"))
    assert reason(letters, "EACADDDDB") is None
    assert reason(letters, "EACF") == REJECTED_BY_GRAMMAR
    assert reason(letters, "['A', 'B']") == REJECTED_BY_GRAMMAR
    board = TokenGrammar(names=frozenset({"Q", "_"}), blanks=" \t\n")
    assert reason(board, "_ Q _\nQ _ _") is None
    assert reason(board, "__ Q") == REJECTED_BY_GRAMMAR


MATH_OK = [
    "\\frac{3}{4}", "0.75", "3/4", "-\\frac{\\sqrt{3}}{2}", "x^2+2x+1", "\\left[0, 1\\right)", "(0,1]",
    "\\{1, 2\\}", "\\text{even}", "\\text{(C)}", "10\\%", "5\\text{ cm}^2", "\\pi r^2", "90^\\circ",
    "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "x_1 + x_{12}", "\\dfrac{1}{2}", "2\\sqrt[3]{2}",
    "\\infty", "a \\le b", "\\alpha+\\beta", "f(x)=x", "1,000", "\\$5", "\\,\\;\\! 3",
]  # fmt: skip
MATH_REJECTED = [
    "__import__('os')", "\\input{/etc/passwd}", "\\def\\x{1}", "x.__class__", "a.b", "'x'", '"x"', "`x`",
    "\\catcode", "π", "√2", "x @ y", "\\text{a}.real", "x\x00",
]  # fmt: skip


@pytest.mark.parametrize("text", MATH_OK)
def test_latex_grammar_accepts_math_answers(text):
    assert reason(LatexGrammar(), text) is None


@pytest.mark.parametrize("text", MATH_REJECTED)
def test_latex_grammar_rejects_code_and_unknown_commands(text):
    assert reason(LatexGrammar(), text) == REJECTED_BY_GRAMMAR


def nested(depth: int, inner: str = "\\frac{1}{2}", wrap=("\\frac{", "}{1}")) -> str:
    text = inner
    for _ in range(depth - 1):
        text = wrap[0] + text + wrap[1]
    return text


def test_latex_depth_boundary():
    grammar = LatexGrammar(max_depth=16)
    assert reason(grammar, nested(16)) is None
    assert reason(grammar, nested(17)) == TOO_DEEP
    assert reason(grammar, "(" * 16 + "1" + ")" * 16) is None
    assert reason(grammar, "\\{" * 17 + "1" + "\\}" * 17) == TOO_DEEP
    assert reason(grammar, "\\left(" * 17 + "1" + "\\right)" * 17) == TOO_DEEP
    assert reason(LatexGrammar(max_depth=200, max_chars=10**7), nested(150)) is None


def test_latex_length_bound_before_anything_else():
    grammar = LatexGrammar(max_chars=2000)
    assert reason(grammar, "1" * 2000) is None
    assert reason(grammar, "1" * 2001) == TOO_LONG


@pytest.mark.parametrize("text", ["{" * 500_000 + "}" * 500_000, "1+" * 500_000, "\\frac" * 200_000])
def test_a_megabyte_is_decided_in_linear_time(text):
    for grammar in (LatexGrammar(max_chars=10**7), POLYNOMIAL):
        start = time.perf_counter()
        reason(grammar, text)
        assert (
            time.perf_counter() - start < 2.0
        )  # ~0.3 s on a loaded 2-core machine; quadratic would be hours


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_accepted_text_never_holds_a_quote_dunder_or_attribute(text):
    for grammar in (POLYNOMIAL, LatexGrammar()):
        if reason(grammar, text) is None:
            assert not set("'\"`") & set(text)
            assert "__" not in text
            assert not any(text[i] == "." and (text[i + 1 : i + 2].isalpha() or text[i + 1 : i + 2] == "_")
                           for i in range(len(text)))  # fmt: skip
