"""Specs for probe.scorer_audit: every reasoning-gym scorer classified, and the answer grammars."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probe.grammar import REJECTED_BY_GRAMMAR, GrammarRejection
from probe.scorer_audit import (
    AUDITED_VERSION,
    CODE,
    COMPARES,
    GRAMMAR,
    REASONING_GYM_SCORERS,
    answer_grammar,
    create_dataset,
    decode_entry,
    encode_entry,
)

EVALUATORS = re.compile(r"\b(eval|exec|parse_expr|sympify|literal_eval|compile)\(\s*([\w\"\[\]]+)")
# Reviewed: these calls evaluate the entry's own text (made by the generator, carried in the problem's
# fields), never the answer.
TRUSTED_EVALUATIONS = {
    "number_sorting": [("eval", 'entry["answer"]')],
    "polynomial_multiplication": [("parse_expr", 'entry["answer"]')],
    "simple_integration": [("parse_expr", 'metadata["integrand"]')],
    "intermediate_integration": [("parse_expr", 'metadata["integrand"]')],
}


def test_every_reasoning_gym_data_set_has_a_reviewed_row():
    from reasoning_gym.factory import DATASETS

    assert sorted(set(DATASETS) - set(REASONING_GYM_SCORERS)) == [], "new data sets: audit their scorers"
    assert sorted(set(REASONING_GYM_SCORERS) - set(DATASETS)) == []
    assert all(audit.kind in (COMPARES, GRAMMAR, CODE) for audit in REASONING_GYM_SCORERS.values())


def test_the_audit_is_of_the_installed_reasoning_gym():
    assert importlib.metadata.version("reasoning-gym") == AUDITED_VERSION, "re-audit the scorers"


def test_scorers_that_evaluate_the_answer_are_never_classed_as_comparing():
    """A mechanical cross-check of the review: eval/exec/parse_expr/... of `answer` in score_answer."""
    from reasoning_gym.factory import DATASETS

    evaluating = set()
    for name, (dataset_class, _config) in DATASETS.items():
        calls = EVALUATORS.findall(inspect.getsource(dataset_class.score_answer))
        trusted = TRUSTED_EVALUATIONS.get(name, [])
        assert all(call in trusted or call[1] == "answer" for call in calls), (name, calls)
        if any(call[1] == "answer" for call in calls):
            evaluating.add(name)
            assert REASONING_GYM_SCORERS[name].kind in (GRAMMAR, CODE), name
    # the seven, countdown (already guarded) and intermediate_integration (same code as simple_)
    assert evaluating == {
        "binary_matrix", "countdown", "intermediate_integration", "n_queens", "polynomial_multiplication",
        "puzzle24", "simple_integration", "spiral_matrix", "string_insertion",
    }  # fmt: skip
    assert {name for name, a in REASONING_GYM_SCORERS.items() if a.kind == GRAMMAR} == evaluating
    assert {name for name, a in REASONING_GYM_SCORERS.items() if a.kind == CODE} == {"composite"}


@pytest.mark.parametrize("name", sorted(n for n, a in REASONING_GYM_SCORERS.items() if a.kind == GRAMMAR))
def test_every_gold_answer_passes_its_grammar(name):
    dataset = create_dataset(name, seed=11, size=20, kwargs={})
    for index in range(20):
        entry = dataset[index]
        grammar = answer_grammar(name, entry["metadata"])
        if name == "intermediate_integration" and "Integral(" in entry["answer"]:
            # reasoning-gym's own gold is an unevaluated integral here: that form is refused on purpose
            # ("Integral(f, x) + C" differentiates back to any f, a reward hack)
            with pytest.raises(GrammarRejection) as rejection:
                grammar.check(entry["answer"])
            assert rejection.value.reason == REJECTED_BY_GRAMMAR
        else:
            grammar.check(entry["answer"])


def test_grammars_take_their_names_from_the_entry():
    polynomial = answer_grammar("polynomial_multiplication", {"variables": ["y"]})
    polynomial.check("3*y**2 - y")
    with pytest.raises(GrammarRejection):
        polynomial.check("3*x**2")
    integration = answer_grammar("simple_integration", {"variable": "X"})
    integration.check("-34*X**8/15 + C")
    integration.check("exp(X) + sin(X)")
    for text in ("Integral(X, X) + C", "N(X)", "S('x')", "X.diff(X)"):
        with pytest.raises(GrammarRejection):
            integration.check(text)
    assert answer_grammar("word_sorting", {}) is None


def test_arithmetic_family_is_the_full_countdown_parser():
    grammar = answer_grammar("puzzle24", {})
    grammar.check("10*(8 - 5) - 6")
    for text in ("9**9**9", "3 5", "(1+2", "1.5*16", "()"):
        with pytest.raises(GrammarRejection):
            grammar.check(text)


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
        | st.dictionaries(
            st.text(max_size=4) | st.integers() | st.tuples(st.integers()), children, max_size=3
        )
    ),
    max_leaves=12,
)


@given(VALUES)
def test_entries_round_trip_through_json_exactly(value):
    back = decode_entry(json.loads(json.dumps(encode_entry(value))))
    assert back == value and _types(back) == _types(value)


def _types(value):
    if isinstance(value, list | tuple):
        return (type(value), [_types(item) for item in value])
    if isinstance(value, dict):
        return (dict, sorted((repr(k), type(k).__name__, _types(v)) for k, v in value.items()))
    return type(value)


def test_unsupported_values_are_named():
    with pytest.raises(TypeError, match="object"):
        encode_entry({"x": object()})


def test_arc_boards_keep_their_tuples():
    """arc_agi compares a parsed board (tuples) with metadata['output']: lists would never equal it."""
    dataset = create_dataset("arc_agi", seed=0, size=1, kwargs={})
    entry = dataset[0]
    carried = decode_entry(
        json.loads(json.dumps(encode_entry({"answer": entry["answer"], "metadata": entry["metadata"]})))
    )
    assert dataset.score_answer(entry["answer"], carried) == 1.0
