"""probe.matched: comparison at matched pass@1 on synthetic trajectories, values worked out by hand."""

from __future__ import annotations

import math

import pytest

from probe.matched import (
    at_level,
    common_levels,
    crossing,
    matched,
    nearest_point,
    reference_levels,
    render_markdown,
    spread,
    target,
)


def point(gain: float, support: float, P: float, E: float, S: float, O: float, step: int = 0) -> dict:  # noqa: E741
    """A trajectory point with classes at budgets 1 and 4 (k = 4 is the point's n)."""
    return {"gain": gain, "step": step, "support_size": support, "pass@1": 0.1 + gain,
            "P@4": P, "E@4": E, "S@4": S, "O@4": O,
            "P@1": P / 2, "E@1": E / 2, "S@1": S / 2, "O@1": O + (P + E + S) / 2}  # fmt: skip


# gains 0, 0.05, 0.03, 0.10, 0.20: not monotone (probe noise), as real trajectories are
TRAJECTORY = [
    point(0.00, 50, 50, 0, 0, 10, step=0),
    point(0.05, 45, 44, 1, 6, 9, step=10),
    point(0.03, 40, 38, 2, 12, 8, step=20),
    point(0.10, 33, 31, 2, 19, 8, step=30),
    point(0.20, 30, 28, 2, 22, 8, step=40),
]


def test_crossing_is_the_first_point_that_reaches_the_level():
    gains = [p["gain"] for p in TRAJECTORY]
    assert crossing(gains, 0.04) == 1
    assert crossing(gains, 0.08) == 3  # 0.05 and 0.03 fall short
    assert crossing(gains, 0.25) is None


def test_at_level_interpolates_between_the_points_around_the_first_crossing():
    # level 0.08: between gain 0.03 (support 40, S 12, E 2) and 0.10 (33, 19, 2): t = 0.05 / 0.07 = 5/7
    values = at_level(TRAJECTORY, 0.08)
    assert values["gain"] == 0.08
    assert values["support_size"] == pytest.approx(40 - 7 * 5 / 7, rel=1e-9)  # 35
    assert values["S@4"] == pytest.approx(12 + 7 * 5 / 7, rel=1e-9)  # 17
    assert values["step"] == pytest.approx(20 + 10 * 5 / 7, rel=1e-9)
    # rates from the interpolated classes P 38 - 7*5/7 = 33, E 2, S 17: NSCR = (2 - 17) / 52, SRR = 33 / 50
    assert values["NSCR@4"] == pytest.approx(-15 / 52, rel=1e-9)
    assert values["SRR@4"] == pytest.approx(33 / 50, rel=1e-9)
    # level 0.04: between the base (support 50) and gain 0.05 (45): t = 0.8
    assert at_level(TRAJECTORY, 0.04)["support_size"] == pytest.approx(46, rel=1e-9)
    assert at_level(TRAJECTORY, 0.25) is None


def test_undefined_rates_stay_undefined():
    flat = [point(0.0, 0, 0, 0, 0, 10), point(0.1, 0, 0, 0, 0, 10)]
    values = at_level(flat, 0.05)
    assert values["NSCR@4"] is None and values["SRR@4"] is None


def test_nearest_point_takes_the_closer_side_of_the_crossing_never_the_base():
    assert nearest_point(TRAJECTORY, 0.08) == 3  # 0.10 is 0.02 away, 0.03 is 0.05 away
    assert nearest_point(TRAJECTORY, 0.06) == 2  # 0.03 is 0.03 away, 0.10 is 0.04 away
    assert nearest_point(TRAJECTORY, 0.01) == 1  # the base is never chosen
    assert nearest_point(TRAJECTORY, 0.50) == 4  # never reached: the highest point


def test_common_levels_stop_at_the_largest_gain_every_run_reaches():
    assert common_levels([0.1234, 0.2, 0.15], 3) == [0.041, 0.082, 0.123]
    assert common_levels([0.1, -0.01], 3) == []


def test_levels_come_from_the_reference_entry_and_an_entry_that_never_gains_is_named():
    # plain GRPO's seeds reach 0.0123 and 0.02 at best: levels up to 0.012; the option never gains
    grpo = [
        [{"gain": 0.0, "x": 0.0}, {"gain": 0.0123, "x": 1.0}],
        [{"gain": 0.0, "x": 0.0}, {"gain": 0.02, "x": 1.0}],
    ]
    option = [[{"gain": 0.0, "x": 0.0}, {"gain": -0.01, "x": 1.0}]]
    by_entry = {"grpo": grpo, "option": option}
    assert reference_levels(by_entry, "grpo", 2) == [0.006, 0.012]
    (level,) = matched(by_entry, [0.012])["levels"]
    assert level["not_reached"] == ["option"] and level["entries"]["option"]["reached"] == 0
    # at 0.012: seed 0 at 0.012 / 0.0123 of its way, seed 1 at 0.6: x is interpolated the same way
    x = level["entries"]["grpo"]["values"]["x"]
    assert x["mean"] == pytest.approx((0.012 / 0.0123 + 0.6) / 2) and x["seeds"] == 2


def test_spread_is_mean_and_sample_std_over_seeds():
    summary = spread([1.0, 2.0, 4.0, None])
    assert summary["mean"] == pytest.approx(7 / 3, rel=1e-12)
    assert summary["std"] == pytest.approx(math.sqrt(7 / 3), rel=1e-12)  # squares 16/9 1/9 25/9, / 2
    assert summary["seeds"] == 3
    assert spread([2.0])["std"] is None


def test_matched_reports_entries_that_do_not_reach_a_level():
    slow = [point(0.0, 50, 50, 0, 0, 10), point(0.06, 48, 47, 1, 3, 9)]
    fast = [point(0.0, 50, 50, 0, 0, 10), point(0.12, 40, 38, 2, 12, 8)]
    result = matched({"grpo": [TRAJECTORY, TRAJECTORY], "option": [fast, slow]}, [0.05, 0.10])
    low, high = result["levels"]
    assert low["not_reached"] == [] and high["not_reached"] == ["option"]
    # level 0.05 for "option": fast seed t = 5/12 -> support 50 - 10 * 5/12; slow seed t = 5/6 -> 50 - 2 * 5/6
    support = low["entries"]["option"]["values"]["support_size"]
    seeds = [50 - 10 * 5 / 12, 50 - 2 * 5 / 6]
    assert support["mean"] == pytest.approx(sum(seeds) / 2, rel=1e-9)
    assert support["std"] == pytest.approx(abs(seeds[0] - seeds[1]) / math.sqrt(2), rel=1e-9)
    assert high["entries"]["option"]["reached"] == 1 and high["entries"]["grpo"]["reached"] == 2


def test_target_needs_less_shrink_nonnegative_nscr_and_expansion():
    def entry(S, E, nscr):
        return {"S@8": {"mean": S}, "E@8": {"mean": E}, "NSCR@8": {"mean": nscr}, "gain": {"mean": 0.1}}

    final = {
        "grpo": entry(20, 1, -0.3),
        "good": entry(6, 6, 0.0),  # net shrink 0 <= 0.6 * 19, NSCR 0, E 6
        "no_new": entry(2, 0, -0.05),  # shrinks little but finds nothing
        "less_but_not_enough": entry(14, 2, -0.2),  # 12 > 0.6 * 19 = 11.4
    }
    result = target(final, "grpo", 8)
    assert result["grpo"]["met"] is None
    assert result["good"]["met"] is True
    assert result["no_new"]["met"] is False
    assert result["less_but_not_enough"]["met"] is False
    assert result["less_but_not_enough"]["shrink_vs_reference"] == pytest.approx(12 / 19, rel=1e-12)
    # plain GRPO expanded on net (S - E = 2 - 6 < 0): "shrinks 40% less" is undefined for every option
    final["grpo"] = entry(2, 6, 0.1)
    result = target(final, "grpo", 8)
    assert [result[e]["met"] for e in final] == [None] * 4
    assert result["good"]["shrink_vs_reference"] is None


def test_the_table_names_levels_entries_and_the_target():
    result = {
        "study": "s",
        "entries": {"grpo": {}, "option": {}},
        "seeds": [0, 1],
        "reference_entry": "grpo",
        "trajectory": {"n": 4, "problems": 60},
        "final": {
            "n": 4,
            "problems": 60,
            "level": 0.1,
            "base": {"pass@1": 0.1, "support_size": 50, "answer_entropy": 1.0, "distinct_correct": 2.0},
            "entries": {"grpo": {"gain": {"mean": 0.1, "std": 0.01}}, "option": {"gain": {"mean": 0.09}}},
        },
        "matched": matched({"grpo": [TRAJECTORY], "option": [TRAJECTORY[:2]]}, [0.04, 0.1]),
        "target": {
            "grpo": {"shrink_vs_reference": 1.0, "met": None},
            "option": {"shrink_vs_reference": 0.5, "met": False},
        },
    }
    text = render_markdown(result)
    assert "## At matched pass@1 gain 0.1" in text
    assert "Not reached by every seed at gain 0.1: option" in text
    assert "| option | 0.090 |" in text and "not met" in text and "reference" in text
    assert "| grpo | 0.100 ± 0.010 |" in text
    assert "base vs base" not in text  # a study made before the noise floor: no row
    # the noise floor: the base against itself with another sampling seed, one row under the entries
    result["final"]["noise_floor"] = {
        "sampling_seed": 1,
        "gain": 0.002,
        "E@4": 3.0,
        "S@4": 2.0,
        "NSCR@4": 0.02,
    }
    row = render_markdown(result).splitlines()[-1]
    assert row.startswith("| *base vs base (sampling seed 1)* | 0.002 | — |") and row.endswith(
        "| noise floor |"
    )
    cells = row.split(" | ")
    assert cells[5:7] == ["3.00", "2.00"]  # E, S in the table's column order
