"""probe.metrics against hand-worked values and an exact big-integer reference."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probe import metrics
from probe.metrics import (
    answer_entropy,
    answer_level_support,
    chao1,
    classes_by_problem,
    classify,
    epsilon,
    expected_support_classes,
    k_ladder,
    missing_mass,
    pass_at_k,
    summarize,
    support_classes,
    support_rates,
    versus_reference,
)

RTOL = 1e-6


def exact_pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k) with Python big integers (C(m, k) = 0 for m < k)."""
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


# --- pass@k


def test_pass_at_k_hand_worked_values():
    # n=4,c=1,k=1: 1/4.  n=4,c=2,k=2: 1 - C(2,2)/C(4,2) = 1 - 1/6.  n=5,c=2,k=2: 1 - 3/10.
    # n=10,c=3,k=4: 1 - C(7,4)/C(10,4) = 1 - 35/210.
    np.testing.assert_allclose(pass_at_k(4, 1, 1), 0.25, rtol=RTOL)
    np.testing.assert_allclose(pass_at_k(4, 2, 2), 5 / 6, rtol=RTOL)
    np.testing.assert_allclose(pass_at_k(5, 2, 2), 0.7, rtol=RTOL)
    np.testing.assert_allclose(pass_at_k(10, 3, 4), 5 / 6, rtol=RTOL)


def test_pass_at_k_is_vectorised_over_mixed_budgets():
    n = np.array([4, 5, 10, 4, 10])
    c = np.array([1, 2, 3, 2, 0])
    np.testing.assert_allclose(pass_at_k(n, c, 2), [0.5, 0.7, 1 - 21 / 45, 5 / 6, 0.0], rtol=RTOL)
    assert pass_at_k(n, c, 2).shape == (5,)


def test_pass_at_k_edges_c_zero_c_n_and_k_n():
    assert pass_at_k(16, 0, 1)[()] == 0.0
    assert pass_at_k(16, 0, 16)[()] == 0.0
    assert pass_at_k(16, 16, 1)[()] == 1.0
    assert pass_at_k(16, 16, 16)[()] == 1.0
    # k = n: solved iff c >= 1
    np.testing.assert_array_equal(pass_at_k(np.full(4, 8), np.array([0, 1, 5, 8]), 8), [0.0, 1.0, 1.0, 1.0])
    # n - c < k gives exactly 1.0
    assert pass_at_k(10, 7, 4)[()] == 1.0


def test_pass_at_k_refuses_k_outside_one_to_n():
    with pytest.raises(ValueError, match="k must be >= 1"):
        pass_at_k(8, 2, 0)
    with pytest.raises(ValueError, match="exceeds the budget"):
        pass_at_k(8, 2, 9)
    with pytest.raises(ValueError, match="exceeds the budget"):
        pass_at_k([8, 4], [2, 2], 8)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(8, 9, 1)


def test_pass_at_k_at_n_8192_matches_exact_fractions():
    n = 8192
    cases = [
        (1, 1),
        (1, 64),
        (1, 4096),
        (3, 1024),
        (17, 2048),
        (100, 8),
        (500, 8000),
        (8192, 8192),
        (0, 8192),
    ]
    c = np.array([case[0] for case in cases])
    for k in (1, 8, 64, 1024, 2048, 4096, 8000, 8192):
        got = pass_at_k(np.full(c.shape, n), c, k)
        want = [exact_pass_at_k(n, ci, k) for ci in c]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_equals_exact_reference(case):
    n, c, k = case
    np.testing.assert_allclose(pass_at_k(n, c, k), exact_pass_at_k(n, c, k), rtol=RTOL, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 200).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_pass_at_k_rises_with_k(case):
    n, c = case
    curve = np.array([pass_at_k(n, c, k)[()] for k in range(1, n + 1)])
    assert np.all(np.diff(curve) >= -1e-12)
    assert curve[0] == pytest.approx(c / n, rel=RTOL)


def test_k_ladder_is_powers_of_two_then_n():
    assert k_ladder(1) == [1]
    assert k_ladder(8) == [1, 2, 4, 8]
    assert k_ladder(12) == [1, 2, 4, 8, 12]
    assert k_ladder(8192)[-1] == 8192 and len(k_ladder(8192)) == 14
    with pytest.raises(ValueError):
        k_ladder(0)


def test_epsilon_is_minus_log_zeta_over_n():
    assert epsilon(8192) == pytest.approx(math.log(20) / 8192, rel=RTOL)
    assert epsilon(8192) == pytest.approx(3.657e-4, rel=1e-3)  # "about 3.7e-4" in the spec
    assert epsilon(100, zeta=0.01) == pytest.approx(math.log(100) / 100, rel=RTOL)
    with pytest.raises(ValueError):
        epsilon(10, zeta=1.0)


# --- support classes and rates


def test_support_classes_from_hand_built_solved_flags():
    ref = [True, True, False, False, True]
    cand = [True, False, True, False, True]
    assert support_classes(ref, cand) == {"P": 2, "E": 1, "S": 1, "O": 1}


def test_classify_names_each_problem_from_correct_counts():
    ref_c, cand_c = [3, 1, 0, 0, 8], [1, 0, 2, 0, 8]
    assert classify(ref_c, cand_c).tolist() == ["P", "S", "E", "O", "P"]
    assert classify(np.array(ref_c) >= 1, np.array(cand_c) >= 1).tolist() == ["P", "S", "E", "O", "P"]
    with pytest.raises(ValueError, match="shapes differ"):
        classify([1, 2], [1])


def test_classes_by_problem_matches_records_by_id_on_common_problems():
    ref = [{"problem_id": "a", "c": 1}, {"problem_id": "b", "c": 0}, {"problem_id": "only_ref", "c": 1}]
    cand = [{"problem_id": "b", "c": 4}, {"problem_id": "a", "c": 0}, {"problem_id": "only_cand", "c": 0}]
    assert classes_by_problem(ref, cand) == {"a": "S", "b": "E"}


def test_support_rates_from_hand_built_counts():
    rates = support_rates(P=2, E=1, S=1, O=1)
    assert rates["SRR"] == pytest.approx(2 / 3, rel=RTOL)
    assert rates["NDR"] == pytest.approx(1 / 3, rel=RTOL)
    assert rates["SDS"] == pytest.approx(4 / 9, rel=RTOL)  # 2 * (2/3)(1/3) / (2/3 + 1/3)
    assert rates["NSCR"] == 0.0
    rates = support_rates(P=6, E=1, S=3, O=10)
    assert rates["SRR"] == pytest.approx(6 / 9, rel=RTOL)
    assert rates["NDR"] == pytest.approx(1 / 7, rel=RTOL)
    assert rates["SDS"] == pytest.approx(2 * (6 / 9) * (1 / 7) / (6 / 9 + 1 / 7), rel=RTOL)
    assert rates["NSCR"] == pytest.approx(-2 / 10, rel=RTOL)


def test_support_rates_with_zero_denominators_are_undefined_not_zero():
    assert support_rates(P=0, E=0, S=0, O=3) == {"SRR": None, "NDR": None, "SDS": None, "NSCR": None}
    assert support_rates(P=0, E=0, S=2, O=1) == {"SRR": 0.0, "NDR": None, "SDS": None, "NSCR": -1.0}
    assert support_rates(P=0, E=2, S=0, O=1) == {"SRR": None, "NDR": 1.0, "SDS": None, "NSCR": 1.0}
    # SRR = 0 and NDR = 1 is defined: SDS = 0
    assert support_rates(P=0, E=1, S=1, O=0) == {"SRR": 0.0, "NDR": 1.0, "SDS": 0.0, "NSCR": 0.0}
    assert support_rates(P=2, E=0, S=0, O=0) == {"SRR": 1.0, "NDR": 0.0, "SDS": 0.0, "NSCR": 0.0}


def test_expected_classes_at_k_equal_n_equal_observed_classes():
    n = 8
    c_ref = np.array([0, 3, 8, 0, 1, 5])
    c_cand = np.array([2, 0, 8, 0, 4, 1])
    expected = expected_support_classes(pass_at_k(n, c_ref, n), pass_at_k(n, c_cand, n))
    observed = support_classes(c_ref >= 1, c_cand >= 1)
    assert observed == {"P": 3, "E": 1, "S": 1, "O": 1}
    assert expected == {key: float(value) for key, value in observed.items()}


def test_expected_classes_hand_worked_at_k_one():
    # a = pass@1 = c/n: reference (1/2, 1), candidate (1/4, 0)
    got = expected_support_classes([0.5, 1.0], [0.25, 0.0])
    assert got == pytest.approx({"P": 0.125, "E": 0.125, "S": 0.375 + 1.0, "O": 0.375}, rel=RTOL)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=30))
def test_expected_classes_sum_to_number_of_problems(pairs):
    a, b = np.array(pairs).T
    classes = expected_support_classes(a, b)
    assert sum(classes.values()) == pytest.approx(len(pairs), rel=1e-9)
    assert all(value >= 0 for value in classes.values())


# --- answer histograms


def test_answer_entropy_hand_worked():
    # counts (2, 1, 1) of n = 4: -(1/2 ln 1/2 + 2 * 1/4 ln 1/4) = 1.5 ln 2
    assert answer_entropy([2, 1, 1]) == pytest.approx(1.5 * math.log(2), rel=RTOL)
    assert answer_entropy([5]) == 0.0
    assert answer_entropy([1] * 8) == pytest.approx(math.log(8), rel=RTOL)
    assert answer_entropy([3, 0, 1]) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), rel=RTOL
    )
    with pytest.raises(ValueError, match="empty"):
        answer_entropy([])


def test_missing_mass_is_singletons_over_n():
    assert missing_mass([3, 1, 1, 2], 10) == pytest.approx(0.2, rel=RTOL)
    assert missing_mass([], 10) == 0.0
    assert missing_mass([2, 2], 8) == 0.0
    with pytest.raises(ValueError):
        missing_mass([5, 6], 10)


def test_chao1_hand_worked():
    assert chao1([3, 1, 1, 2]) == pytest.approx(4 + 2 * 1 / (2 * 2), rel=RTOL)  # D=4, f1=2, f2=1
    assert chao1([1, 1, 1]) == pytest.approx(3 + 3 * 2 / 2, rel=RTOL)  # f2 = 0
    assert chao1([5]) == 1.0
    assert chao1([]) == 0.0


def test_answer_level_support_pools_over_problems():
    ref = [{"a", "b"}, {"x"}, set()]
    cand = [{"b", "c", "d"}, set(), {"a"}]  # "a" in problem 3 is a different answer from "a" in problem 1
    assert answer_level_support(ref, cand) == {"preserved": 1, "new": 3, "lost": 2}


# --- records


def record(problem_id, answers, token_entropy=0.0):
    n = sum(count for _, count, _ in answers)
    c = sum(count for _, count, correct in answers if correct)
    return {
        "problem_id": problem_id,
        "n": n,
        "c": c,
        "answers": [{"answer": a, "count": count, "correct": correct} for a, count, correct in answers],
        "token_entropy": token_entropy,
    }


def test_summarize_hand_worked_two_problems():
    records = [
        record("p1", [("x", 2, True), ("y", 1, True), ("NA", 1, False)], token_entropy=0.5),
        record("p2", [("NA", 4, False)], token_entropy=1.5),
    ]
    got = summarize(records)
    assert set(got) == {
        "pass@1",
        "pass@2",
        "pass@4",
        "support_size",
        "eps",
        "token_entropy",
        "answer_entropy",
        "distinct_correct",
        "missing_mass",
        "chao1",
        "num_problems",
    }
    assert got["pass@1"] == pytest.approx((3 / 4 + 0) / 2, rel=RTOL)
    assert got["pass@2"] == 0.5  # p1: n - c = 1 < 2 -> 1
    assert got["pass@4"] == 0.5
    assert got["support_size"] == 1
    assert got["eps"] == pytest.approx(math.log(20) / 4, rel=RTOL)
    assert got["token_entropy"] == pytest.approx(1.0, rel=RTOL)
    assert got["answer_entropy"] == pytest.approx(0.75 * math.log(2), rel=RTOL)
    assert got["distinct_correct"] == 1.0
    assert got["missing_mass"] == pytest.approx(0.125, rel=RTOL)  # p1: f1 = 1 of n = 4
    assert got["chao1"] == pytest.approx(1.0, rel=RTOL)  # p1: 2 + 1*0/(2*2) = 2; p2: 0
    assert got["num_problems"] == 2


def test_summarize_refuses_inconsistent_records():
    good = record("p1", [("x", 2, True), ("NA", 2, False)])
    with pytest.raises(ValueError, match="p1.*sum to 4, expected n = 3"):
        summarize([{**good, "n": 3}])
    with pytest.raises(ValueError, match="p1.*c = 1"):
        summarize([{**good, "c": 1}])
    with pytest.raises(ValueError, match="different budgets"):
        summarize([good, record("p2", [("NA", 8, False)])])
    with pytest.raises(ValueError, match="correct=None"):
        summarize([record("p3", [("x", 2, None)])])
    with pytest.raises(ValueError, match="no records"):
        summarize([])


def test_versus_reference_matches_problems_by_id():
    ref = [
        record("a", [("x", 1, True), ("NA", 1, False)]),
        record("b", [("NA", 2, False)]),
        record("c", [("y", 2, True)]),
    ]
    cand = [
        record("c", [("NA", 2, False)]),
        record("a", [("x", 2, True)]),
        record("b", [("z", 1, True), ("w", 1, False)]),
    ]
    got = versus_reference(ref, cand)
    assert got == {"P": 1, "E": 1, "S": 1, "O": 0, "SRR": 0.5, "NDR": 0.5, "SDS": 0.5, "NSCR": 0.0}
    with pytest.raises(ValueError, match="problem sets differ"):
        versus_reference(ref, cand[:2])
    with pytest.raises(ValueError, match="budget"):
        versus_reference(ref, [cand[0], cand[1], record("b", [("NA", 4, False)])])


def test_module_has_no_state_at_import():
    public = {name for name in vars(metrics) if not name.startswith("_")}
    assert not any(isinstance(getattr(metrics, name), (list, dict, np.ndarray)) for name in public)
