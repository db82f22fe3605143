"""Domains: suite recipes, per-domain and pooled metrics in summary.json, compare, plots and W&B keys."""

from __future__ import annotations

import json

import pytest
from fake_probe import write_probe_dir, write_run_dir

from probe.cli import ConfigError, parse
from probe.compare import compare, render_markdown
from probe.config import ProbeConfig
from probe.domains import default_domain, domain_keys
from probe.metrics import summarize
from probe.store import load_probe, load_problems
from probe.tasks import Problem, SuiteConfig, TaskConfig, TaskSuite, make_suite, make_task, suite_sections

# Two domains by hand, n = 8 each; classes by construction (reference -> candidate):
# math: m1 P, m2 E, m3 S; countdown: c1 P, c2 S, c3 O.
DOMAINS = {"m1": "math", "m2": "math", "m3": "math", "c1": "countdown", "c2": "countdown", "c3": "countdown"}
REFERENCE = {
    "m1": [("1/2", 3, True), ("2", 5, False)],
    "m2": [("3", 8, False)],
    "m3": [("5", 1, True), ("6", 7, False)],
    "c1": [("1+2", 2, True), ("2+1", 2, True), ("NA", 4, False)],
    "c2": [("a", 1, True), ("NA", 7, False)],
    "c3": [("NA", 8, False)],
}
CANDIDATE = {
    "m1": [("1/2", 8, True)],
    "m2": [("7", 2, True), ("3", 6, False)],
    "m3": [("6", 8, False)],
    "c1": [("1+2", 8, True)],
    "c2": [("NA", 8, False)],
    "c3": [("NA", 8, False)],
}


@pytest.fixture
def pair(tmp_path):
    reference = write_probe_dir(tmp_path / "ref", REFERENCE, task="suite", domains=DOMAINS)
    candidate = write_probe_dir(tmp_path / "cand", CANDIDATE, task="suite", domains=DOMAINS)
    return reference, candidate


def test_two_domain_compare_breaks_every_class_and_rate_down_by_domain_and_pools_overall(pair, tmp_path):
    result = compare(*pair[:1], [pair[1]])
    (candidate,) = result["candidates"]
    math, countdown = candidate["domains"]["math"], candidate["domains"]["countdown"]
    assert {k: math["support"][k] for k in "PESO"} == {"P": 1, "E": 1, "S": 1, "O": 0}
    assert {k: countdown["support"][k] for k in "PESO"} == {"P": 1, "E": 0, "S": 1, "O": 1}
    assert {k: candidate["support"][k] for k in "PESO"} == {"P": 2, "E": 1, "S": 2, "O": 1}  # pooled
    assert (math["support"]["SRR"], math["support"]["NDR"], math["support"]["NSCR"]) == (0.5, 0.5, 0.0)
    assert (countdown["support"]["SRR"], countdown["support"]["NDR"]) == (0.5, 0.0)
    assert countdown["support"]["NSCR"] == -0.5
    assert candidate["support"]["SRR"] == 0.5
    assert candidate["support"]["NDR"] == pytest.approx(1 / 3, rel=1e-12)
    assert candidate["support"]["NSCR"] == pytest.approx(-0.2, rel=1e-12)
    # answer level: math m1 preserved, m2 new, m3 lost; countdown c1 one preserved one lost, c2 lost
    assert math["answer_level"] == {"preserved": 1, "new": 1, "lost": 1}
    assert countdown["answer_level"] == {"preserved": 1, "new": 0, "lost": 2}
    assert candidate["answer_level"] == {"preserved": 2, "new": 1, "lost": 3}
    assert math["num_problems"] == countdown["num_problems"] == 3 and candidate["num_problems"] == 6
    assert math["metrics"]["pass@1"] == pytest.approx((1 + 2 / 8 + 0) / 3, rel=1e-12)
    assert result["reference"]["domains"]["countdown"]["support_size"] == 2
    markdown = render_markdown(result)
    assert "## By domain" in markdown and "| math | 3 |" in markdown and "| overall | 6 |" in markdown


def test_wandb_keys_per_domain_beside_the_unchanged_pooled_keys(pair):
    from probe.watch import probe_metrics

    reference, candidate = pair
    keys = probe_metrics(candidate, reference)
    assert keys["probe/math/vs_base/SRR"] == 0.5 and keys["probe/countdown/vs_base/NDR"] == 0.0
    assert keys["probe/vs_base/NSCR"] == keys["probe/overall/vs_base/NSCR"] == pytest.approx(-0.2, rel=1e-12)
    assert keys["probe/countdown/vs_base/NSCR"] == -0.5 and keys["probe/math/vs_base/E"] == 1
    assert keys["probe/pass@1"] == keys["probe/overall/pass@1"]
    assert keys["probe/math/pass@1"] == pytest.approx((1 + 2 / 8 + 0) / 3, rel=1e-12)
    assert keys["probe/countdown/pass@1"] == pytest.approx((1 + 0 + 0) / 3, rel=1e-12)
    mean = (keys["probe/math/pass@1"] + keys["probe/countdown/pass@1"]) / 2  # equal-sized domains
    assert keys["probe/pass@1"] == pytest.approx(mean, rel=1e-12)
    assert keys["probe/countdown/support_size"] == 1 and keys["probe/support_size"] == 3


def test_domain_keys_scheme():
    keys = domain_keys("probe", "vs_base", {"SRR": 0.5}, {"math": {"SRR": 1.0}})
    assert keys == {"probe/vs_base/SRR": 0.5, "probe/overall/vs_base/SRR": 0.5, "probe/math/vs_base/SRR": 1.0}
    assert domain_keys("probe", "", {"pass@1": 0.2}, {}) == {"probe/pass@1": 0.2, "probe/overall/pass@1": 0.2}


def test_a_probe_dir_written_before_domains_is_one_domain_named_after_its_task(tmp_path):
    probe = load_probe(write_probe_dir(tmp_path / "old", REFERENCE, task="countdown"))
    assert list(probe.by_domain) == ["countdown"] and len(probe.by_domain["countdown"]) == 6
    assert default_domain("reasoning_gym:basic_arithmetic") == "basic_arithmetic"


def test_plots_of_a_suite_run_have_figures_per_domain(tmp_path):
    from probe.plots import plot_run

    run = write_run_dir(tmp_path / "run", {0: REFERENCE, 10: CANDIDATE}, domains=DOMAINS)
    names = {path.name for path in plot_run(run)}
    assert {"support.png", "support_math.png", "support_countdown.png", "pass_at_k_math.png"} <= names
    assert {"tradeoff_countdown.png", "tradeoff.png"} <= names


# --- suite recipes


SUITE_RECIPE = """\
suite:
  easy: {task: countdown, seed: 99, num_problems: 3, min_numbers: 3, max_numbers: 3, max_target: 30}
  hard: {task: countdown, seed: 5, num_problems: 2, min_numbers: 4, max_numbers: 4, min_target: 50}
n: 8
max_new_tokens: 16
"""


def _sections(recipe: str, tmp_path, *extra):
    path = tmp_path / "suite.yaml"
    path.write_text(recipe)
    task, suite, _ = parse((TaskConfig, SuiteConfig, ProbeConfig), ["--config", str(path), *extra])
    return suite_sections(task, suite)


def test_a_suite_recipe_gives_one_task_per_domain_and_problems_carry_their_domain(tmp_path):
    sections = _sections(SUITE_RECIPE, tmp_path)
    assert list(sections) == ["easy", "hard"] and sections["hard"].min_target == 50
    suite = make_suite(sections)
    problems = suite.problems()
    assert [p.domain for p in problems] == ["easy"] * 3 + ["hard"] * 2
    assert all(p.problem_id.startswith(f"{p.domain}/countdown/") for p in problems)
    assert suite.task_of(problems[4]) is suite.tasks["hard"] and suite.name.startswith("suite(easy=countdown")
    single = TaskSuite.of(make_task(TaskConfig(num_problems=2)))  # one domain: ids unprefixed, as before
    assert single.domains == ["countdown"] and single.problems()[0].problem_id.startswith("countdown/")
    assert single.task_of(Problem("x", "p", {})) is single.tasks["countdown"]


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        (SUITE_RECIPE + "seed: 3\n", r"task keys \['seed'\] beside suite"),
        ("suite:\n  easy: {task: countdown, not_a_key: 1}\n", r"suite\.easy: unknown key\(s\) \['not_a"),
        ("suite:\n  easy: {task: countdown, num_problems: many}\n", r"suite\.easy\.num_problems"),
        ("suite:\n  Overall: {task: countdown}\n", "domain name 'Overall'"),
        ("suite:\n  overall: {task: countdown}\n", "domain name 'overall'"),
        ("suite: [1, 2]\n", "mapping of domain name"),
    ],
)
def test_bad_suite_recipes_are_refused_naming_what_is_wrong(tmp_path, recipe, message):
    with pytest.raises(ConfigError, match=message):
        _sections(recipe, tmp_path)


def test_probe_run_of_a_suite_writes_both_levels_and_counts_bad_input_per_domain(tiny_base, tmp_path):
    from probe.__main__ import cli

    math_file = tmp_path / "math.jsonl"  # the countdown base writes no \boxed{}: all NA
    rows = [{"problem": "1+1", "answer": "2", "id": "a"}, {"problem": "2+2", "answer": "}{", "id": "b"}]
    math_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    section = f"  math: {{task: math, data_path: {math_file}, id_column: id}}\n"
    recipe = tmp_path / "suite.yaml"
    recipe.write_text(SUITE_RECIPE.replace("n: 8", section + "n: 8"))
    out = tmp_path / "probe"
    args = ["run", "--config", str(recipe), "--model", str(tiny_base), "--output_dir", str(out),
            "--progress", "false"]  # fmt: skip
    assert cli(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = load_problems(out)
    assert [r["domain"] for r in rows] == ["easy"] * 3 + ["hard"] * 2 + ["math"]  # math/b skipped
    assert summary["tasks"] == {"easy": "countdown", "hard": "countdown", "math": "math"}
    assert summary["metrics"] == pytest.approx(summarize(rows), rel=1e-12)
    for domain in ("easy", "hard", "math"):
        part = [r for r in rows if r["domain"] == domain]
        assert summary["domains"][domain] == pytest.approx(summarize(part), rel=1e-12)
    assert summary["domains"]["easy"]["num_problems"] == 3 and summary["metrics"]["num_problems"] == 6
    assert summary["skipped_problems"] == 1 and summary["skipped_by_domain"] == {"math": 1}
    math_reasons = summary["reasons_by_domain"]["math"]
    assert sum(math_reasons.values()) == 8 and set(math_reasons) <= {"no_answer", "unfinished"}
    assert summary["domains"]["math"]["pass@1"] == 0.0
    assert json.loads((out / "config.json").read_text())["suite"]["hard"]["min_target"] == 50
