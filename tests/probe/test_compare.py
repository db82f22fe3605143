"""`python -m probe compare` on hand-built probe dirs whose classes and rates are known by construction."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_probe import write_probe_dir, write_run_dir

from probe import compare
from probe.store import ProbeDirError

RTOL = 1e-6

# n = 4 per problem. Reference / candidate solved: p0 both (P), p1 reference only (S),
# p2 candidate only (E), p3 neither (O), p4 both (P).
REFERENCE = {
    "p0": [("a", 1, True), ("b", 1, True), ("NA", 2, False)],  # c = 2
    "p1": [("d", 4, True)],  # c = 4
    "p2": [("NA", 4, False)],  # c = 0
    "p3": [("NA", 4, False)],  # c = 0
    "p4": [("f", 1, True), ("NA", 3, False)],  # c = 1
}
CANDIDATE = {
    "p0": [("b", 2, True), ("c", 1, True), ("NA", 1, False)],  # c = 3
    "p1": [("NA", 3, False), ("wrong", 1, False)],  # c = 0
    "p2": [("e", 1, True), ("NA", 3, False)],  # c = 1
    "p3": [("x", 4, False)],  # c = 0
    "p4": [("f", 4, True)],  # c = 4
}


@pytest.fixture
def pair(tmp_path):
    return write_probe_dir(tmp_path / "base", REFERENCE), write_probe_dir(tmp_path / "final", CANDIDATE)


def run_compare(*args):
    return compare.command([str(a) for a in args])


def test_full_budget_classes_rates_and_answer_level_support_match_construction(pair, tmp_path, capsys):
    result = run_compare(*pair, "--output_dir", tmp_path / "out")
    (got,) = result["candidates"]
    assert got["budget"] == 4
    assert {key: got["support"][key] for key in "PESO"} == {"P": 2, "E": 1, "S": 1, "O": 1}
    assert got["support"]["SRR"] == pytest.approx(2 / 3, rel=RTOL)
    assert got["support"]["NDR"] == pytest.approx(1 / 3, rel=RTOL)
    assert got["support"]["SDS"] == pytest.approx(4 / 9, rel=RTOL)
    assert got["support"]["NSCR"] == 0.0
    # distinct correct answers: preserved b (p0), f (p4); new c (p0), e (p2); lost a (p0), d (p1)
    assert got["answer_level"] == {"preserved": 2, "new": 2, "lost": 2}
    assert got["shrunk_ids"] == ["p1"] and got["expanded_ids"] == ["p2"]
    assert got["eps"] == pytest.approx(2.995732273553991 / 4, rel=RTOL)  # ln(20) / 4
    assert got["metrics"]["pass@1"] == pytest.approx((0.75 + 0 + 0.25 + 0 + 1) / 5, rel=RTOL)
    assert result["reference"]["metrics"]["pass@4"] == pytest.approx(3 / 5, rel=RTOL)
    assert json.loads((tmp_path / "out" / "compare.json").read_text()) == json.loads(json.dumps(result))
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert "| final | 4 | 0.7489 | 2 | 1 | 1 | 1 | 0.6667 | 0.3333 | 0.4444 | 0 | 2 | 2 | 2 |" in markdown
    assert "Shrunk (1): p1" in markdown and "Expanded (1): p2" in markdown
    assert markdown in capsys.readouterr().out  # the table prints in the terminal too


def test_expected_classes_by_k_hand_worked_and_equal_observed_at_k_n(pair, tmp_path):
    (got,) = run_compare(*pair, "--output_dir", tmp_path / "out")["candidates"]
    assert list(got["support_by_k"]) == ["1", "2", "4"]
    # k = 1: a = (1/2, 1, 0, 0, 1/4), b = (3/4, 0, 1/4, 0, 1)
    k1 = got["support_by_k"]["1"]
    assert [k1[key] for key in "PESO"] == pytest.approx([0.625, 1.375, 1.125, 1.875], rel=RTOL)
    assert k1["eps"] == pytest.approx(2.995732273553991, rel=RTOL)
    # k = 2: a = (5/6, 1, 0, 0, 1/2), b = (1, 0, 1/2, 0, 1)
    k2 = got["support_by_k"]["2"]
    assert [k2[key] for key in "PESO"] == pytest.approx([4 / 3, 7 / 6, 1.0, 1.5], rel=RTOL)
    assert k2["SRR"] == pytest.approx((4 / 3) / (4 / 3 + 1), rel=RTOL)
    assert got["support_by_k"]["4"] == got["support"]


def test_undefined_rates_are_null_in_json_and_printed_as_undefined(tmp_path):
    nothing = {"p0": [("NA", 2, False)], "p1": [("y", 2, False)]}
    ref = write_probe_dir(tmp_path / "ref", nothing)
    cand = write_probe_dir(tmp_path / "cand", nothing)
    result = run_compare(ref, cand, "--output_dir", tmp_path / "out")
    support = result["candidates"][0]["support"]
    assert support.pop("eps") == pytest.approx(2.995732273553991 / 2, rel=RTOL)
    assert support == {"P": 0, "E": 0, "S": 0, "O": 2, "SRR": None, "NDR": None, "SDS": None, "NSCR": None}
    assert '"SRR": null' in (tmp_path / "out" / "compare.json").read_text()
    assert (
        "| 0 | 0 | 0 | 2 | undefined | undefined | undefined | undefined |"
        in (tmp_path / "out" / "compare.md").read_text()
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"temperature": 0.6}, "temperature differs"),
        ({"top_p": 0.9}, "top_p differs"),
        ({"task": "math"}, "task differs"),
    ],
)
def test_refuses_different_temperature_top_p_or_task_even_with_intersect(tmp_path, change, message):
    ref = write_probe_dir(tmp_path / "ref", REFERENCE)
    cand = write_probe_dir(tmp_path / "cand", CANDIDATE, **change)
    for extra in ([], ["--intersect"]):
        with pytest.raises(ProbeDirError, match=message):
            run_compare(ref, cand, "--output_dir", tmp_path / "out", *extra)
    assert not (tmp_path / "out").exists()


def test_refuses_different_problem_sets_naming_them(tmp_path):
    ref = write_probe_dir(tmp_path / "ref", REFERENCE)
    cand = write_probe_dir(tmp_path / "cand", {**CANDIDATE, "p9": [("z", 4, True)]})
    with pytest.raises(
        ProbeDirError, match=r"problem sets differ.*5 problems.*6.*only in candidate: \['p9'\].*--intersect"
    ):
        run_compare(ref, cand, "--output_dir", tmp_path / "out")


def test_refuses_different_budgets_naming_them(tmp_path):
    ref = write_probe_dir(tmp_path / "ref", REFERENCE)
    doubled = {pid: [(a, 2 * count, ok) for a, count, ok in answers] for pid, answers in CANDIDATE.items()}
    cand = write_probe_dir(tmp_path / "cand", doubled)
    with pytest.raises(ProbeDirError, match="budgets differ: ref has n=4, cand n=8"):
        run_compare(ref, cand, "--output_dir", tmp_path / "out")


def test_intersect_compares_common_problems_at_the_smaller_budget(tmp_path, capsys):
    ref = write_probe_dir(tmp_path / "ref", REFERENCE)  # n = 4
    cand = write_probe_dir(
        tmp_path / "cand",
        {
            "p0": [("b", 2, True), ("NA", 6, False)],  # n = 8, c = 2
            "p1": [("NA", 8, False)],
            "p9": [("z", 8, True)],
        },
    )
    result = run_compare(ref, cand, "--output_dir", tmp_path / "out", "--intersect")
    (got,) = result["candidates"]
    assert got["num_problems"] == 2 and got["budget"] == 4
    # reference pass@4 = (1, 1); candidate pass@4 at n = 8: p0 1 - C(6,4)/C(8,4) = 11/14, p1 0
    support = got["support"]
    assert [support[key] for key in "PESO"] == pytest.approx([11 / 14, 0.0, 17 / 14, 0.0], rel=RTOL)
    assert support["SRR"] == pytest.approx(11 / 28, rel=RTOL)
    assert support["NDR"] == 0.0 and support["SDS"] == 0.0
    assert support["NSCR"] == pytest.approx(-17 / 28, rel=RTOL)
    assert got["reference_metrics"]["num_problems"] == 2 and got["metrics"]["num_problems"] == 2
    assert any("2 common problems" in note for note in got["notes"])
    assert any("expected counts at k=4" in note for note in got["notes"])
    assert "expected counts at k=4" in capsys.readouterr().out


def test_half_written_and_empty_probe_dirs_are_named(pair, tmp_path):
    ref, _ = pair
    half = write_probe_dir(tmp_path / "half", CANDIDATE, summary=False)
    with pytest.raises(ProbeDirError, match=f"{half}: no summary.json.*half-written"):
        run_compare(ref, half, "--output_dir", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProbeDirError, match=f"{tmp_path / 'empty'}: no summary.json"):
        run_compare(tmp_path / "empty", ref, "--output_dir", tmp_path / "out")
    with pytest.raises(ProbeDirError, match="not a directory"):
        run_compare(ref, tmp_path / "missing", "--output_dir", tmp_path / "out")


def test_run_dir_stands_for_its_probe_points_in_step_order(tmp_path):
    base = write_probe_dir(tmp_path / "base", REFERENCE)
    run = write_run_dir(tmp_path / "run", {100: CANDIDATE, 0: REFERENCE, 50: REFERENCE})
    result = run_compare(base, run, "--output_dir", tmp_path / "out")
    assert [c["label"] for c in result["candidates"]] == ["run/step-0", "run/step-50", "run/step-100"]
    assert [c["step"] for c in result["candidates"]] == [0, 50, 100]
    assert result["candidates"][0]["support"]["S"] == 0 and result["candidates"][2]["support"]["S"] == 1
    # a run dir as the reference: its first probe point is the reference, the later ones candidates
    result = run_compare(run, "--output_dir", tmp_path / "out2")
    assert result["reference"]["label"] == "run/step-0"
    assert [c["label"] for c in result["candidates"]] == ["run/step-50", "run/step-100"]


def test_run_dir_with_a_half_written_probe_point_is_named(tmp_path):
    run = write_run_dir(tmp_path / "run", {0: REFERENCE})
    write_probe_dir(run / "probes" / "step-000050", CANDIDATE, summary=False)
    with pytest.raises(ProbeDirError, match="step-000050: no summary.json"):
        run_compare(run, "--output_dir", tmp_path / "out")


def test_inconsistent_problems_parquet_is_named(tmp_path):
    ref = write_probe_dir(tmp_path / "ref", REFERENCE)
    bad = write_probe_dir(tmp_path / "bad", CANDIDATE)
    table = pq.read_table(bad / "problems.parquet")
    n = table.column("n").to_pylist()
    table = table.set_column(table.schema.get_field_index("n"), "n", pa.array([5] + n[1:], pa.int64()))
    pq.write_table(table, bad / "problems.parquet")
    with pytest.raises(
        ProbeDirError, match="bad/problems.parquet: record p0: answer counts sum to 4, expected n = 5"
    ):
        run_compare(ref, bad, "--output_dir", tmp_path / "out")
