"""Training mixtures of several domains: recipe sections and weights, the dataset's shares, the reward
dispatching each completion to its domain's verifier (bad input kept through domains)."""

from __future__ import annotations

import json

import pytest

from probe.cli import ConfigError
from probe.tasks import Problem, TaskSuite, countdown_prompt, make_task
from probe.tasks import TaskConfig as TC
from train.config import LeashGRPOConfig, train_sections
from train.data import mixture, problems_dataset
from train.rewards import make_format_reward, make_reward_function

MATH_ROWS = [
    {"problem": "1/2+1/2=", "answer": "1", "id": "a"},
    {"problem": "broken", "answer": "}{", "id": "b"},  # math-verify cannot parse this gold
]


def _config(tmp_path, **values) -> LeashGRPOConfig:
    return LeashGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, **values)


def test_mixture_gives_each_domain_its_weighted_share_cycling_or_cutting_its_problems():
    problems = [Problem(f"m{i}", "p", {}, "math") for i in range(3)]
    problems += [Problem(f"c{i}", "p", {}, "countdown") for i in range(5)]
    rows = mixture(problems, {"math": 0.7, "countdown": 0.3})
    # 8 rows: 5.6 and 2.4 -> 5 and 2, the larger remainder (math) takes the last row
    assert [p.problem_id for p in rows] == ["m0", "m1", "m2", "m0", "m1", "m2", "c0", "c1"]
    assert mixture(problems[:3], {"math": 1.0}) == problems[:3]
    with pytest.raises(ConfigError, match=r"no training problems left in domain\(s\) \['countdown'\]"):
        mixture(problems[:3], {"math": 1.0, "countdown": 1.0})


def test_dataset_rows_carry_their_domain():
    problems = [Problem("m0", "p", {"answer": "1"}, "math"), Problem("c0", "q", {}, "countdown")]
    assert problems_dataset(problems)["domain"] == ["math", "countdown"]


def test_train_tasks_sections_weights_and_refusals(tmp_path):
    sections, weights = train_sections(
        _config(
            tmp_path,
            train_tasks={
                "math": {"weight": 0.7, "task": "math", "data_path": "x.jsonl"},
                "countdown": {"weight": 0.3, "seed": 7},
            },
        )  # fmt: skip
    )
    assert sections["math"].data_path == "x.jsonl" and sections["countdown"].seed == 7
    assert weights == {"math": 0.7, "countdown": 0.3}
    single, weight = train_sections(_config(tmp_path, train_task={"task": "countdown", "seed": 3}))
    assert list(single) == ["countdown"] and single["countdown"].seed == 3 and weight == {"countdown": 1.0}
    refusals = [
        ({"train_task": {"seed": 1}, "train_tasks": {"a": {}}}, "both set"),
        ({"train_tasks": {"a": {"weight": 0}}}, r"train_tasks\.a\.weight must be a number > 0"),
        ({"train_tasks": {"a": {"weight": "x"}}}, r"train_tasks\.a\.weight"),
        ({"train_tasks": {"a": {"nope": 1}}}, r"train_tasks\.a: unknown key\(s\) \['nope'\]"),
        ({"train_tasks": {"overall": {}}}, "domain name 'overall'"),
        ({"train_tasks": {"a": {}, "b": {"prompt_format": "chat"}}}, "same prompt_format"),
        ({"train_tasks": '{"a": 1}'}, "mapping of domain name"),
    ]
    for values, message in refusals:
        with pytest.raises(ConfigError, match=message):
            train_sections(_config(tmp_path, **values))


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    path = tmp_path_factory.mktemp("mix") / "math.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in MATH_ROWS))
    suite = TaskSuite({"math": make_task(TC(task="math", data_path=str(path), id_column="id")),
                       "countdown": make_task(TC(num_problems=2))})  # fmt: skip
    yield suite
    suite.close()


def test_the_reward_judges_each_completion_by_its_domains_verifier(suite):
    countdown_fields = {"numbers": [3, 5, 2], "target": 16}
    rows = [  # (problem_id, prompt, fields, domain, completion, reward)
        ("math/math/a", "1/2+1/2=", {"answer": "1"}, "math", "\\boxed{1.0}", 1.0),
        ("math/math/a", "1/2+1/2=", {"answer": "1"}, "math", "(3+5)*2", 0.0),  # no \boxed{}: NA
        ("countdown/c", countdown_prompt([3, 5, 2], 16), countdown_fields, "countdown", "(3+5)*2", 1.0),
        ("countdown/c", countdown_prompt([3, 5, 2], 16), countdown_fields, "countdown", "\\boxed{16}", 0.0),
        ("math/math/b", "broken", {"answer": "}{"}, "math", "\\boxed{1}", None),  # gold unparseable
        ("math/math/a", "1/2+1/2=", {"answer": "1"}, "math", "\\boxed{" + "\\frac{" * 1000 + "}", 0.0),
    ]
    logged = {}
    reward = make_reward_function(suite)
    rewards = reward(
        prompts=[r[1] for r in rows], completions=[r[4] for r in rows], problem_id=[r[0] for r in rows],
        fields=[json.dumps(r[2]) for r in rows], domain=[r[3] for r in rows], log_metric=logged.__setitem__,
    )  # fmt: skip
    assert rewards == [r[5] for r in rows]
    assert reward.__name__ == "suite_correct"
    assert logged["rewards/suite_correct/math/mean"] == pytest.approx(1 / 3, rel=1e-12)  # of 3 scored
    assert logged["rewards/suite_correct/countdown/mean"] == 0.5
    assert logged["rewards/suite_correct/gold_unparseable"] == 1.0
    assert logged["rewards/suite_correct/no_answer"] == 2.0  # the math row without \boxed{}, the cut one
    assert logged["rewards/suite_correct/outside_grammar"] == 1.0  # countdown's "\boxed{16}"
    formats = make_format_reward(suite)(
        prompts=[r[1] for r in rows], completions=[r[4] for r in rows], domain=[r[3] for r in rows]
    )
    assert formats == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_a_latex_bomb_through_the_mixture_reward_is_incorrect_within_the_time_limit(suite):
    import time

    problem = ("math/math/a", "1/2+1/2=", {"answer": "1"}, "math")
    bombs = [
        "\\boxed{" + "\\frac{" * 1000 + "1" + "}{2}" * 1000 + "}",  # \frac nested 1,000 deep
        "\\boxed{" + "{" * 500_000 + "}" * 500_000 + "}",  # 1 MB of braces
    ]
    logged = {}
    start = time.perf_counter()
    rewards = make_reward_function(suite)(
        prompts=[problem[1]] * 2, completions=bombs, problem_id=[problem[0]] * 2,
        fields=[json.dumps(problem[2])] * 2, domain=[problem[3]] * 2, log_metric=logged.__setitem__,
    )  # fmt: skip
    assert rewards == [0.0, 0.0]
    assert time.perf_counter() - start < suite.tasks["math"].config.verifier_timeout_seconds
    assert logged["rewards/suite_correct/too_long"] == 2.0  # both past max_answer_chars before any parse


def test_probing_the_first_problems_of_a_suite_is_refused_before_any_model_loads(tmp_path, tiny_base):
    """probe_num_problems takes the first N problems of one task; a suite has no single first N."""
    from trl import ModelConfig

    from train.grpo import main

    recipe = tmp_path / "suite.yaml"
    sections = (
        "  easy: {task: countdown, num_problems: 4}\n  hard: {task: countdown, num_problems: 4, seed: 1}\n"
    )
    recipe.write_text("suite:\n" + sections + "n: 2\n")
    train_task = {"task": "countdown", "num_problems": 8}
    config = _config(tmp_path / "run", train_task=train_task, probe_recipe=str(recipe), probe_num_problems=2)
    with pytest.raises(ConfigError, match=r"probe_num_problems: .* suite of 2 domains \(easy, hard\)"):
        main(config, ModelConfig(model_name_or_path=str(tiny_base)))
    assert not (tmp_path / "run").exists()
