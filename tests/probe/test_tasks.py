"""Specs for probe.tasks, probe.expression, probe.sandbox: problems, answers, canonical forms, verifiers."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.cli import ConfigError, parse
from probe.expression import ExpressionError, ExpressionLimits, canonical, evaluate, parse_expression
from probe.sandbox import ScorerTimeout
from probe.tasks import (
    NA,
    Problem,
    Reason,
    TaskConfig,
    Verdict,
    countdown_key,
    countdown_prompt,
    last_boxed,
    last_tagged,
    make_task,
)

PAYLOAD = "__import__('os').system('touch {path}')"
LIMITS = ExpressionLimits(max_chars=200, max_tokens=100, max_depth=16, max_digits=6)


def countdown_problem(numbers, target):
    return Problem(f"countdown/{'_'.join(map(str, numbers))}/{target}", countdown_prompt(numbers, target),
                   {"numbers": list(numbers), "target": target})  # fmt: skip


@pytest.fixture(scope="module")
def countdown():
    return make_task(TaskConfig(task="countdown", num_problems=20))


@pytest.fixture(scope="module")
def countdown_chat():
    return make_task(TaskConfig(task="countdown", num_problems=20, prompt_format="chat"))


@pytest.fixture(scope="module")
def rg_countdown():
    task = make_task(TaskConfig(task="reasoning_gym:countdown", num_problems=5, prompt_format="chat"))
    yield task
    task.close()


@pytest.fixture(scope="module")
def math_file(tmp_path_factory):
    rows = [
        {"problem": "What is 3/4 as a decimal?", "answer": "\\frac{3}{4}", "id": "q0"},
        {"problem": "Broken gold.", "answer": "}{", "id": "q1"},
        {"problem": "Solve x+1=3.", "answer": "2", "id": "q2"},
    ]
    path = tmp_path_factory.mktemp("math") / "problems.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


@pytest.fixture(scope="module")
def math_task(math_file):
    task = make_task(TaskConfig(task="math", data_path=str(math_file), id_column="id", prompt_format="chat"))
    yield task
    task.close()


# --- config and construction


def test_every_task_config_field_has_a_default_and_help():
    for field in dataclasses.fields(TaskConfig):
        assert field.metadata.get("help"), field.name
        assert field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def test_task_config_parses_from_the_command_line():
    (config,) = parse((TaskConfig,), ["--task", "math", "--data_path", "x.jsonl", "--operators", "+", "-"])
    assert (config.task, config.data_path, config.operators) == ("math", "x.jsonl", ["+", "-"])


@pytest.mark.parametrize("name", ["countdwn", "reasoning_gym:no_such_dataset", "gsm8k"])
def test_unknown_task_name_is_a_config_error_naming_it(name):
    with pytest.raises(ConfigError, match=name):
        make_task(TaskConfig(task=name))


def test_bad_prompt_format_and_operators_are_config_errors():
    with pytest.raises(ConfigError, match="prompt_format"):
        make_task(TaskConfig(prompt_format="json"))
    with pytest.raises(ConfigError, match="operators"):
        make_task(TaskConfig(operators=["^"]))


def test_countdown_prompt_and_key():
    assert countdown_prompt([3, 5, 7, 2], 24) == "3 5 7 2=24:"
    assert countdown_key([7, 3, 5], 24) == countdown_key([3, 5, 7], 24) == ((3, 5, 7), 24)


# --- countdown problems


def test_countdown_problems_are_seeded_distinct_and_in_range():
    config = TaskConfig(task="countdown", num_problems=150, seed=3, min_numbers=3, max_numbers=4, max_value=9)
    first, again = make_task(config).problems(), make_task(config).problems()
    assert first == again
    other = make_task(dataclasses.replace(config, seed=4)).problems()
    assert [p.problem_id for p in other] != [p.problem_id for p in first]
    assert len(first) == 150
    assert len({countdown_key(**p.fields) for p in first}) == 150
    for problem in first:
        numbers, target = problem.fields["numbers"], problem.fields["target"]
        assert 3 <= len(numbers) <= 4 and all(1 <= x <= 9 for x in numbers) and 1 <= target <= 100
        assert problem.prompt == countdown_prompt(numbers, target)
        assert problem.problem_id == f"countdown/{'_'.join(map(str, numbers))}/{target}"
        json.dumps(problem.fields)


def test_countdown_chat_prompt_asks_for_answer_tags(countdown_chat):
    problem = countdown_chat.problems()[0]
    assert "<answer></answer>" in problem.prompt and str(problem.fields["target"]) in problem.prompt


def test_countdown_infeasible_unique_request_is_a_config_error():
    config = TaskConfig(num_problems=50, min_numbers=2, max_numbers=2, min_value=1, max_value=2, max_target=4)
    with pytest.raises(ConfigError, match="unique_problems"):
        make_task(config).problems()


# --- countdown verifier: hand-written cases

CASES = [
    # (numbers, target, completion, canonical answer, correct)
    ([3, 5, 7, 2], 40, "(3+5)*(7-2)", "(3+5)*(7-2)", True),
    ([3, 5, 7, 2], 40, "  ( 3 + 5 ) * ( 7 - 2 ) \n", "(3+5)*(7-2)", True),  # spaces
    ([3, 5, 7, 2], 40, "(7-2)*(5+3)", "(7-2)*(5+3)", True),  # operand order kept: a distinct answer
    ([3, 5, 7, 2], 40, "(3+5)*(7-3)", "(3+5)*(7-3)", False),  # reuses 3, leaves out 2
    ([3, 5, 7, 2], 40, "(3+5)*5", "(3+5)*5", False),  # wrong numbers
    ([3, 5, 7, 2], 40, "(3+5)*(7-2)*1", "(3+5)*(7-2)*1", False),  # an extra number
    ([3, 5, 7, 2], 36, "3+5*7-2", "3+5*7-2", True),  # precedence: 3 + 35 - 2
    ([3, 5, 7, 2], 40, "3+5*7-2", "3+5*7-2", False),
    ([3, 5, 2], 17, "(3*5)+2", "3*5+2", True),  # redundant parentheses removed
    ([3, 5, 2], 0, "3-(5-2)", "3-(5-2)", True),  # needed: left-associativity
    ([3, 5, 2], 16, "(3+5)*2", "(3+5)*2", True),  # needed: precedence
    ([3, 5, 2], 10, "3+(5+2)", "3+(5+2)", True),  # kept: another tree than 3+5+2
    ([3, 5, 2], 10, "((3)+5)+((2))", "3+5+2", True),
    ([2, 3, 5], 6, "-(2-5)+3", "-(2-5)+3", True),  # unary minus
    ([2, 3, 5], 6, "3--(5-2)", "3--(5-2)", True),
    ([2, 3, 5], 11, "-2*-3+5", "-2*-3+5", True),
    ([3, 3, 8, 8], 24, "8/(3-8/3)", "8/(3-8/3)", True),  # exact rationals: 8 / (1/3)
    ([3, 3, 4], 4, "4/(3-3)", "4/(3-3)", False),  # division by zero
    ([1, 3, 3], 1, "1/3*3", "1/3*3", True),  # exact: not 0.333... * 3
]


@pytest.mark.parametrize(("numbers", "target", "completion", "answer", "correct"), CASES)
def test_countdown_verifier_hand_cases(countdown, numbers, target, completion, answer, correct):
    assert countdown.judge(countdown_problem(numbers, target), completion) == Verdict(answer, correct)


@pytest.mark.parametrize(
    "completion",
    ["", "   ", "abc", "3 5", "3+", "(3+5", "3+5)", ")3+5(", "3**5", "3^5", "3.0+5", "03+5", "3+5=8", "+3+5",
     "3×5", "٣+٥", "3+5\x00", "1/(3)(5)"],
)  # fmt: skip
def test_countdown_text_outside_the_grammar_is_na(countdown, completion):
    reason = Reason.OUTSIDE_GRAMMAR if completion.strip() else Reason.NO_ANSWER
    assert countdown.judge(countdown_problem([3, 5], 8), completion) == Verdict(NA, False, reason)


def test_chat_format_takes_the_last_answer_tag(countdown_chat):
    problem = countdown_problem([3, 5], 8)
    judged = countdown_chat.judge_many(
        problem,
        [
            "think <answer>3*5</answer> no: <answer> 3 + 5 </answer>",
            "3+5",
            "<answer>3+5",
            "<answer></answer>",
        ],
    )
    no_answer = Verdict(NA, False, Reason.NO_ANSWER)
    assert judged == [Verdict("3+5", True), no_answer, no_answer, no_answer]


def test_answer_extractors():
    assert last_tagged("a <answer>1</answer> b <answer> 2 </answer>") == "2"
    assert last_tagged("<answer>1") is None
    assert last_boxed("x \\boxed{1} then \\boxed{\\frac{1}{2}} end") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{\\frac{1}{2") is None
    assert last_boxed("no box") is None


def test_judge_many_verifies_once_per_distinct_answer(countdown, monkeypatch):
    calls = []
    verify = type(countdown).verify
    monkeypatch.setattr(
        countdown,
        "verify",
        lambda problem, answer: calls.append(answer) or verify(countdown, problem, answer),
    )
    verdicts = countdown.judge_many(countdown_problem([3, 5], 8), ["3+5", " 3+5 ", "5+3", "3+5", "x", "y"])
    assert [v.correct for v in verdicts] == [True, True, True, True, False, False]
    assert sorted(calls) == ["3+5", "5+3", "x", "y"]


# --- hostile input: bounded time, never executed

HOSTILE = [
    "9**9**9",
    "9" * 10_000,
    "1+" * 5_000 + "1",
    "(" * 500 + "1" + ")" * 500,
    "-" * 10_000 + "1",
    "__import__('os')",
    "<answer>" * 5_000 + "</answer>" * 5_000,
    "\\boxed{" * 5_000,
    "9" * 150,
    "(" * 16 + "9" + ")" * 16 + "*(" + "9*" * 40 + "9)",
]


@pytest.mark.parametrize("completion", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_countdown_input_is_incorrect_within_50_ms(countdown, countdown_chat, completion):
    problem = countdown_problem([9, 9, 9], 27)
    for task, text in ((countdown, completion), (countdown_chat, f"<answer>{completion}</answer>")):
        start = time.perf_counter()
        verdict = task.judge(problem, text)
        assert time.perf_counter() - start <= 0.05
        assert verdict.correct is False


def test_payload_creates_nothing_through_the_countdown_verifiers(
    countdown, countdown_chat, rg_countdown, tmp_path
):
    marker = tmp_path / "FILE"
    payload = PAYLOAD.format(path=marker)
    refused = Verdict(NA, False, Reason.OUTSIDE_GRAMMAR)
    assert countdown.judge(countdown_problem([3, 5], 8), payload) == refused
    assert countdown_chat.judge(countdown_problem([3, 5], 8), f"<answer>{payload}</answer>") == refused
    problem = rg_countdown.problems()[0]
    assert rg_countdown.judge(problem, f"<answer>{payload}</answer>").correct is False
    # Past our grammar check, straight into reasoning-gym's scorer (sympy parse_expr) in the worker:
    assert rg_countdown.scorer.call("reasoning_gym", fields=problem.fields, answer=payload) < 1.0
    assert (
        rg_countdown.scorer.call("reasoning_gym", fields=problem.fields, answer=f"open('{marker}', 'w')")
        < 1.0
    )
    assert not marker.exists()


# --- fuzzing the parser

EXPRESSION_TEXT = st.text(alphabet="0123456789+-*/() \t", max_size=60) | st.text(max_size=60)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=EXPRESSION_TEXT)
def test_fuzzed_text_is_judged_without_raising_in_bounded_time(countdown, text):
    start = time.perf_counter()
    verdict = countdown.judge(countdown_problem([3, 5, 7], 8), text)
    assert time.perf_counter() - start <= 0.05
    assert verdict.correct in (True, False)
    if verdict.answer != NA:  # the canonical form is itself a grammatical, equivalent expression
        assert parse_expression(verdict.answer, LIMITS) == parse_expression(text.strip(), LIMITS)


def trees():
    leaf = st.integers(0, 99).map(lambda value: ("num", value))
    return st.recursive(
        leaf,
        lambda child: st.tuples(st.sampled_from("+-*/"), child, child) | child.map(lambda c: ("neg", c)),
        max_leaves=8,
    )


def fully_parenthesised(tree):
    if tree[0] == "num":
        return str(tree[1])
    if tree[0] == "neg":
        return f"-({fully_parenthesised(tree[1])})"
    return f"({fully_parenthesised(tree[1])} {tree[0]} {fully_parenthesised(tree[2])})"


@settings(max_examples=300, deadline=None)
@given(tree=trees())
def test_canonical_form_parses_back_to_the_same_tree(tree):
    text = canonical(tree)
    assert parse_expression(fully_parenthesised(tree), LIMITS) == tree
    assert parse_expression(text, LIMITS) == tree
    assert " " not in text and len(text) <= len(fully_parenthesised(tree))


def test_evaluation_is_exact():
    assert evaluate(parse_expression("1/3+1/3+1/3", LIMITS)) == Fraction(1)
    with pytest.raises(ExpressionError, match="deeper"):
        parse_expression("(" * 17 + "1" + ")" * 17, LIMITS)


# --- agreement with reasoning-gym's own scorer


def mutations(expression, numbers, rng):
    """Wrong and right variants of a solution: other numbers, other operators, dropped/added terms."""
    out = [expression, expression.replace(" ", "")]
    digits = [i for i, ch in enumerate(expression) if ch.isdigit()]
    position = rng.choice(digits)
    out.append(expression[:position] + str((int(expression[position]) + 1) % 10) + expression[position + 1 :])
    ops = [i for i, ch in enumerate(expression) if ch in "+-*/" and i > 0]
    if ops:
        position = rng.choice(ops)
        out.append(
            expression[:position]
            + rng.choice("+-*/".replace(expression[position], ""))
            + expression[position + 1 :]
        )
    out.append(f"({expression})+{numbers[0]}")  # reuses a number
    out.append("+".join(map(str, numbers)))
    out.append("*".join(map(str, reversed(numbers))))
    out.append(f"({expression})/({numbers[0]}-{numbers[0]})")  # division by zero
    return out


def test_countdown_verdicts_agree_with_reasoning_gym_on_500_problems(countdown):
    from reasoning_gym.games.countdown import CountdownConfig, CountdownDataset

    rng = random.Random(0)
    small_config = CountdownConfig(
        min_numbers=3, max_numbers=4, max_value=12, min_target=1, max_target=100, seed=11
    )
    small = CountdownDataset(dataclasses.replace(small_config, size=420))
    default = CountdownDataset(
        CountdownConfig(seed=12, size=80)
    )  # reasoning-gym's own ranges: 4-6 numbers to 100
    entries = [small[i] for i in range(420)] + [default[i] for i in range(80)]
    outcomes = {True: 0, False: 0}
    for entry in entries:
        numbers, target = entry["metadata"]["numbers"], entry["metadata"]["target"]
        problem = countdown_problem(numbers, target)
        assert countdown.judge(problem, entry["answer"]).correct is True
        for candidate in mutations(entry["answer"], numbers, rng):
            ours = countdown.judge(problem, candidate)
            if ours.answer == NA:
                continue  # only text our grammar accepted (plain arithmetic) ever reaches parse_expr here
            theirs = small.score_answer(candidate, entry) == 1.0
            assert ours.correct == theirs, (candidate, numbers, target)
            outcomes[theirs] += 1
    assert outcomes[True] >= 500 and outcomes[False] >= 1500


# --- reasoning_gym:<name> through the isolated worker


def test_reasoning_gym_countdown_scores_its_own_solutions(rg_countdown):
    import reasoning_gym

    dataset = reasoning_gym.create_dataset("countdown", seed=0, size=5)
    problems = rg_countdown.problems()
    assert [p.problem_id for p in problems] == [f"reasoning_gym:countdown/0/{i}" for i in range(5)]
    for index, problem in enumerate(problems):
        solution = dataset[index]["answer"]
        completions = [f"<answer> {solution} </answer>", f"<answer>{solution}+1</answer>", "no tags"]
        verdicts = rg_countdown.judge_many(problem, completions)
        assert verdicts == [
            Verdict(solution, True),
            Verdict(f"{solution}+1", False),
            Verdict(NA, False, Reason.NO_ANSWER),
        ]


def test_reasoning_gym_other_dataset_by_name():
    import reasoning_gym

    task = make_task(TaskConfig(task="reasoning_gym:basic_arithmetic", num_problems=3, seed=5))
    try:
        dataset = reasoning_gym.create_dataset("basic_arithmetic", seed=5, size=3)
        problem = task.problems()[1]
        assert problem.prompt == dataset[1]["question"]
        assert task.judge(problem, f"  {dataset[1]['answer']}\n") == Verdict(dataset[1]["answer"], True)
        assert task.judge(problem, "12345678987654321").correct is False
    finally:
        task.close()


def test_scorer_that_runs_too_long_is_killed_and_restarted(rg_countdown):
    problem = rg_countdown.problems()[0]
    scorer = rg_countdown.scorer
    scorer.timeout_seconds, restarts = 1.0, scorer.restarts
    try:
        start = time.perf_counter()
        with pytest.raises(ScorerTimeout):
            scorer.call("reasoning_gym", fields=problem.fields, answer="9**9**9**9")
        assert time.perf_counter() - start < 5
        assert scorer.restarts == restarts + 1
    finally:
        scorer.timeout_seconds = rg_countdown.config.verifier_timeout_seconds
    assert scorer.call("reasoning_gym", fields=problem.fields, answer="1") < 1.0  # a fresh worker answers


def test_a_pickled_task_starts_its_own_worker(rg_countdown):
    import pickle

    problem = rg_countdown.problems()[0]
    rg_countdown.judge(problem, "<answer>1+2</answer>")  # the original's worker is running
    copy = pickle.loads(pickle.dumps(rg_countdown))
    try:
        assert copy.scorer._process is None
        assert copy.judge(problem, "<answer>1+2</answer>") == Verdict("1+2", False)
        assert copy.scorer._process.pid != rg_countdown.scorer._process.pid
    finally:
        copy.close()


# --- math (math-verify in the worker process; judged from a worker thread)


def in_thread(function, *args):
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(
            lambda: (threading.current_thread() is not threading.main_thread(), function(*args))
        ).result()


def test_math_problems_from_a_jsonl_file(math_task):
    problems = math_task.problems()
    assert [p.problem_id for p in problems] == ["math/q0", "math/q1", "math/q2"]
    assert problems[0].prompt.startswith("What is 3/4") and "\\boxed{}" in problems[0].prompt
    assert problems[0].fields == {"answer": "\\frac{3}{4}"}


def test_math_verify_cases_in_a_worker_thread(math_task, tmp_path):
    problem = math_task.problems()[0]
    marker = tmp_path / "FILE"
    completions = [
        "so the answer is \\boxed{0.75}",
        "\\boxed{\\frac{3}{4}}",
        "\\boxed{1} wait, \\boxed{3/4}",
        "\\boxed{1}",
        "no box",
        "\\boxed{\\frac{3}{4",  # cut off
        f"\\boxed{{{PAYLOAD.format(path=marker)}}}",
    ]
    off_main, verdicts = in_thread(math_task.judge_many, problem, completions)
    assert off_main
    assert [v.correct for v in verdicts] == [True, True, True, False, False, False, False]
    assert [v.reason for v in verdicts[4:6]] == [Reason.NO_ANSWER, Reason.NO_ANSWER]
    assert all(v.reason is None for v in verdicts[:4])  # scored, right or wrong
    assert [v.answer for v in verdicts[:5]] == ["0.750000000000000", "3/4", "3/4", "1", NA]
    assert not marker.exists()
    _, verdict = in_thread(math_task.judge, math_task.problems()[2], "x = \\boxed{2}")
    assert verdict == Verdict("2", True)


def test_math_answer_over_the_length_limit_is_na_and_says_so(math_file):
    task = make_task(TaskConfig(task="math", data_path=str(math_file), max_answer_chars=5))
    try:
        problem = task.problems()[2]
        _, verdicts = in_thread(task.judge_many, problem, ["\\boxed{2}", "\\boxed{2+0+0+0}"])
        assert verdicts == [Verdict("2", True), Verdict(NA, False, Reason.TOO_LONG)]
    finally:
        task.close()


def test_a_scorer_timeout_or_crash_is_an_unscored_verdict_saying_which(math_file):
    from probe.sandbox import ScorerCrashed

    class Failing:
        def call(self, kind, **args):
            raise {"\\frac{3}{4}": ScorerTimeout, "2": ScorerCrashed}[args["gold"]]("failed")

        def close(self):
            pass

    task = make_task(TaskConfig(task="math", data_path=str(math_file), id_column="id"))
    task.scorer = Failing()
    slow, crashing = task.problems()[0], task.problems()[2]
    assert task.judge(slow, "\\boxed{1}") == Verdict(NA, False, Reason.VERIFIER_TIMEOUT)
    assert task.judge(crashing, "\\boxed{1}") == Verdict(NA, False, Reason.VERIFIER_ERROR)


def test_math_unparseable_gold_is_none_with_one_warning(math_file, caplog):
    task = make_task(TaskConfig(task="math", data_path=str(math_file), id_column="id"))
    try:
        problem = task.problems()[1]
        with caplog.at_level(logging.WARNING, logger="probe.tasks"):
            _, first = in_thread(task.judge_many, problem, ["\\boxed{1}", "none"])
            _, second = in_thread(task.judge, problem, "\\boxed{2}")
        assert [v.correct for v in [*first, second]] == [None, None, None]
        assert {v.reason for v in [*first, second]} == {Reason.GOLD_UNPARSEABLE}
        assert sum("cannot be parsed" in record.message for record in caplog.records) == 1
    finally:
        task.close()


def test_math_bad_columns_and_sources_are_config_errors(math_file, tmp_path):
    with pytest.raises(ConfigError, match="solution"):
        make_task(TaskConfig(task="math", data_path=str(math_file), answer_column="solution")).problems()
    with pytest.raises(ConfigError, match="data_path or dataset_name"):
        make_task(TaskConfig(task="math"))
    with pytest.raises(ConfigError, match="missing.jsonl"):
        make_task(TaskConfig(task="math", data_path=str(tmp_path / "missing.jsonl"))).problems()


def test_math_parquet_and_seeded_sample(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(
        pa.table({"question": [f"q{i}" for i in range(10)], "gold": [str(i) for i in range(10)]}), path
    )
    config = TaskConfig(task="math", data_path=str(path), problem_column="question", answer_column="gold",
                        num_problems=4, seed=1)  # fmt: skip
    problems = make_task(config).problems()
    assert problems == make_task(config).problems() and len(problems) == 4
    assert all(p.fields["answer"] == p.prompt[1:] for p in problems)


# --- math answer classes (docs/answer-classes.md)


def _forms(task, problem, texts_and_counts):
    """AnswerForms as the probe tallies them: canonical answer, its extracted text, count, correctness."""
    from probe.tasks import AnswerForm

    verdicts = task.judge_many(problem, [f"\\boxed{{{text}}}" for text, _ in texts_and_counts])
    return [
        AnswerForm(v.answer, text, count, bool(v.correct))
        for (text, count), v in zip(texts_and_counts, verdicts, strict=True)
    ]


def test_math_answers_math_verify_judges_equal_are_one_class(math_task):
    wrong = Problem("math/seven", "p", {"answer": "7"})
    forms = _forms(math_task, wrong, [("0.5", 1), ("\\frac{1}{2}", 2), ("1/2", 1), ("2", 5), ("2.0", 3),
                                      ("0.75", 4), ("\\frac{3}{4}", 1), ("-2", 1)])  # fmt: skip
    assert forms[3].answer != forms[4].answer and forms[5].answer != forms[6].answer  # strings differ
    classes = math_task.answer_classes(wrong, forms)
    half, two, three_quarters, minus_two = classes[0], classes[3], classes[5], classes[7]
    assert classes[:3] == [half] * 3 and classes[3:5] == [two] * 2 and classes[5:7] == [three_quarters] * 2
    assert len({half, two, three_quarters, minus_two}) == 4
    # the representative is the class's most frequent canonical answer
    assert (two, three_quarters, minus_two) == (forms[3].answer, forms[5].answer, "-2")


def test_correct_answers_are_one_class_named_by_the_gold_text(math_task):
    half = Problem("math/half", "p", {"answer": "\\frac{1}{2}"})
    forms = _forms(math_task, half, [("0.5", 3), ("1/2", 1), ("\\dfrac{2}{4}", 2), ("2", 1)])
    assert [f.correct for f in forms] == [True, True, True, False]
    assert math_task.answer_classes(half, forms) == ["\\frac{1}{2}"] * 3 + ["2"]


def test_a_clustering_call_that_fails_leaves_its_answers_as_classes_of_their_own(math_file):
    from probe.tasks import AnswerForm

    class Crashing:
        def call(self, kind, **args):
            from probe.sandbox import ScorerCrashed

            raise ScorerCrashed("worker died")

        def close(self):
            pass

    task = make_task(TaskConfig(task="math", data_path=str(math_file)))
    task.scorer = Crashing()
    forms = [AnswerForm("2", "2", 3, False), AnswerForm("2.00000000000000", "2.0", 1, False)]
    assert task.answer_classes(Problem("math/x", "p", {"answer": "7"}), forms) == ["2", "2.00000000000000"]


def test_clustering_more_wrong_answers_than_one_call_takes(math_task):
    from probe.tasks.math import CLASS_CHUNK

    problem = Problem("math/big", "p", {"answer": "1000"})
    texts = [(str(i), 2) for i in range(CLASS_CHUNK + 5)] + [(f"{i}.0", 1) for i in range(CLASS_CHUNK + 5)]
    classes = math_task.answer_classes(problem, _forms(math_task, problem, texts))
    half = len(texts) // 2
    assert classes[:half] == [str(i) for i in range(half)] and classes[half:] == classes[:half]


def test_math_judges_a_problems_distinct_answers_in_one_scorer_call(math_file):
    """Each scorer call is a round trip to the worker process; on a busy CPU (the sampler's threads
    spinning beside it) one costs tens of ms, so a problem's answers go together."""
    task = make_task(TaskConfig(task="math", data_path=str(math_file), id_column="id"))
    calls = []
    call = task.scorer.call
    task.scorer.call = lambda kind, **args: calls.append(kind) or call(kind, **args)
    try:
        problem = task.problems()[0]
        texts = [f"\\boxed{{{i}/4}}" for i in range(12)] + ["no box", "\\boxed{0.75}"]
        _, verdicts = in_thread(task.judge_many, problem, texts)
        assert calls == ["math_many"]
        assert [v.correct for v in verdicts] == [i == 3 for i in range(12)] + [False, True]
        assert verdicts[12].reason == Reason.NO_ANSWER
    finally:
        task.close()


def test_a_batch_that_fails_is_judged_answer_by_answer_so_only_the_bad_one_goes_unscored(math_file):
    from probe.sandbox import ScorerTimeout

    class SlowOnOne:
        def __init__(self, real):
            self.real, self.kinds = real, []

        def call(self, kind, **args):
            self.kinds.append((kind, len(args.get("answers", []))))
            if "9" in args.get("answers", []):
                raise ScorerTimeout("past the limit")
            return self.real.call(kind, **args)

        def close(self):
            self.real.close()

    task = make_task(TaskConfig(task="math", data_path=str(math_file), id_column="id"))
    task.scorer = SlowOnOne(task.scorer)
    try:
        problem = task.problems()[2]  # gold 2
        _, verdicts = in_thread(task.judge_many, problem, ["\\boxed{2}", "\\boxed{9}", "\\boxed{2.0}"])
        assert verdicts == [Verdict("2", True), Verdict(NA, False, Reason.VERIFIER_TIMEOUT),
                            Verdict("2.00000000000000", True)]  # fmt: skip
        assert task.scorer.kinds == [("math_many", 3), ("math_many", 1), ("math_many", 1), ("math_many", 1)]
    finally:
        task.close()


def test_two_models_spelling_one_answer_differently_share_it_at_the_answer_level(math_task):
    """Through the probe's own tally: one model writes the gold 1/2 as `0.5`, the other as `1/2` and
    `\\frac{1}{2}`; both records name the class by the gold text, so the comparison between the two
    probe dirs preserves one answer instead of counting one lost and one new."""
    import numpy as np

    from probe import metrics
    from probe.run import ProblemTally
    from probe.sampling import SampleChunk

    problem = Problem("math/half", "p", {"answer": "\\frac{1}{2}"})

    def record(boxed: list[str]) -> dict:
        texts = [f"\\boxed{{{text}}}" for text in boxed]
        chunk = SampleChunk([[1]] * len(texts), texts, np.ones(len(texts), np.int64),
                            np.zeros(len(texts)), np.ones(len(texts), bool))  # fmt: skip
        tally = ProblemTally()
        tally.add(chunk, in_thread(tally.judge, math_task, problem, chunk)[1])
        return {"n": tally.samples, "answers": in_thread(tally.answer_classes, math_task, problem)[1]}

    a = record(["0.5", "0.5", "0.5", "2", "2.0"])
    b = record(["1/2", "\\frac{1}{2}", "2", "3"])
    assert [(e["answer"], e["count"], e["correct"]) for e in a["answers"]] == [
        ("\\frac{1}{2}", 3, True), ("2", 2, False)]  # fmt: skip
    assert a["answers"][1]["forms"] == {"2": 1, "2.00000000000000": 1}
    assert metrics.correct_answers(a) == metrics.correct_answers(b) == {"\\frac{1}{2}"}
    assert metrics.correct_counts(b) == [2]
    assert metrics.answer_level_support([metrics.correct_answers(a)], [metrics.correct_answers(b)]) == {
        "preserved": 1, "new": 0, "lost": 0}  # fmt: skip
    counts = [e["count"] for e in a["answers"]]  # answer entropy counts 2 classes here, not 3 strings
    assert metrics.answer_entropy(counts) == pytest.approx(metrics.answer_entropy([3, 2]))
