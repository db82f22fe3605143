"""Specs for train.rewards: TRL reward functions built from probe task verifiers."""

from __future__ import annotations

import json
import threading

import pytest

from probe.sandbox import ScorerCrashed, ScorerTimeout
from probe.tasks import CountdownTask, Reason, TaskConfig, countdown_prompt, make_task
from train.rewards import completion_text, make_format_reward, make_reward_function

PAYLOAD = "__import__('os').system('touch {path}')"


def columns(problems):
    """The dataset columns TRL passes to reward functions (as train/data.py builds them)."""
    return {"problem_id": [p["id"] for p in problems], "fields": [json.dumps(p["fields"]) for p in problems]}


def countdown_rows(*completions, numbers=(3, 5, 2), target=16):
    fields = {"numbers": list(numbers), "target": target}
    problem_id = f"countdown/{'_'.join(map(str, numbers))}/{target}"
    rows = [{"id": problem_id, "fields": fields} for _ in completions]
    return [countdown_prompt(numbers, target)] * len(completions), list(completions), columns(rows)


@pytest.fixture(scope="module")
def countdown():
    return make_task(TaskConfig(task="countdown"))


@pytest.fixture(scope="module")
def math_task(tmp_path_factory):
    path = tmp_path_factory.mktemp("math") / "m.jsonl"
    path.write_text(
        json.dumps({"problem": "1+1?", "answer": "2"}) + "\n" + json.dumps({"problem": "?", "answer": "}{"})
    )
    task = make_task(TaskConfig(task="math", data_path=str(path)))
    yield task
    task.close()


def test_correctness_reward_is_one_or_zero_per_completion(countdown):
    prompts, completions, kwargs = countdown_rows("(3+5)*2", "3+5+2", "(3+5)*2", "nonsense", "")
    assert make_reward_function(countdown)(prompts=prompts, completions=completions, **kwargs) == [
        1.0, 0.0, 1.0, 0.0, 0.0,
    ]  # fmt: skip


def test_reward_handles_several_problems_in_one_batch(countdown):
    p1, c1, k1 = countdown_rows("(3+5)*2", "3*5+2")
    p2, c2, k2 = countdown_rows("3*5+2", "(3+5)*2", numbers=(3, 5, 2), target=17)
    kwargs = {key: k1[key] + k2[key] for key in k1}
    rewards = make_reward_function(countdown)(prompts=p1 + p2, completions=c1 + c2, **kwargs)
    assert rewards == [1.0, 0.0, 1.0, 0.0]


def test_conversational_completions_use_the_last_message():
    task = make_task(TaskConfig(task="countdown", prompt_format="chat"))
    prompts, _, kwargs = countdown_rows("a", "b")
    prompts = [[{"role": "user", "content": text}] for text in prompts]
    completions = [
        [{"role": "assistant", "content": "Let me see. <answer>(3+5)*2</answer>"}],
        [{"role": "assistant", "content": "(3+5)*2"}],  # no tags: no answer in chat format
    ]
    assert make_reward_function(task)(prompts=prompts, completions=completions, **kwargs) == [1.0, 0.0]
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "x"}]}]) == "x"


def test_mismatched_column_lengths_raise(countdown):
    prompts, completions, kwargs = countdown_rows("3+5", "5+3")
    with pytest.raises(ValueError):
        make_reward_function(countdown)(prompts=prompts, completions=completions[:1], **kwargs)


def test_unparseable_gold_gives_none_not_zero(math_task):
    problems = [{"id": "math/0", "fields": {"answer": "2"}}, {"id": "math/1", "fields": {"answer": "}{"}}]
    rows = [problems[0], problems[0], problems[1]]
    completions = ["\\boxed{2}", "\\boxed{3}", "\\boxed{2}"]
    result = {}

    def run():  # reward functions run off the main thread under some launchers
        result["rewards"] = make_reward_function(math_task)(
            prompts=["q"] * 3, completions=completions, **columns(rows)
        )

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert result["rewards"] == [1.0, 0.0, None]


class FakeScorer:
    """Stands in for the isolated worker: "slow" times out, "crash" crashes, anything else scores 0."""

    def call(self, kind, answer, **args):
        if answer == "slow":
            raise ScorerTimeout("past the limit")
        if answer == "crash":
            raise ScorerCrashed("worker died")
        return 0.0

    def close(self):
        pass


def test_verifier_timeouts_and_crashes_are_counted_per_batch_through_log_metric():
    task = make_task(TaskConfig(task="reasoning_gym:basic_arithmetic", num_problems=1))
    task.scorer = FakeScorer()
    problem = task.problems()[0]
    completions = ["slow", "crash", "slow", "12", "   "]
    logged = []
    reward = make_reward_function(task)
    rewards = reward(
        prompts=[problem.prompt] * 5,
        completions=completions,
        **columns([{"id": problem.problem_id, "fields": problem.fields}] * 5),
        log_metric=lambda name, value: logged.append((name, value)),
    )
    assert rewards == [0.0, 0.0, 0.0, 0.0, 0.0]
    counts = dict(logged)
    assert len(counts) == len(logged) == len(Reason)  # every reason, once per call (zeros included)
    name = "reasoning_gym_basic_arithmetic_correct"
    assert counts[f"rewards/{name}/verifier_timeout"] == 2.0  # one scorer call, two completions
    assert counts[f"rewards/{name}/verifier_error"] == 1.0
    assert counts[f"rewards/{name}/no_answer"] == 1.0
    assert counts[f"rewards/{name}/too_long"] == 0.0


class ExplodingCountdown(CountdownTask):
    def verify(self, problem, answer):
        if answer == "boom":
            raise RuntimeError("verifier bug")
        return super().verify(problem, answer)


def test_a_verifier_bug_surfaces_instead_of_being_counted_away():
    reward = make_reward_function(ExplodingCountdown(TaskConfig()))
    prompts, completions, kwargs = countdown_rows("(3+5)*2", "boom", "3+5+2")
    with pytest.raises(RuntimeError, match="verifier bug"):
        reward(prompts=prompts, completions=completions, **kwargs)


def test_format_reward_checks_the_answer_grammar(countdown):
    prompts, completions, kwargs = countdown_rows("(3+5)*2", "9*9", "9**9", "three plus five")
    assert make_format_reward(countdown)(prompts=prompts, completions=completions, **kwargs) == [
        1.0,
        1.0,
        0.0,
        0.0,
    ]
    chat = make_task(TaskConfig(prompt_format="chat"))
    prompts, completions, kwargs = countdown_rows("<answer>9*9</answer>", "9*9", "<answer>9 9</answer>")
    assert make_format_reward(chat)(prompts=prompts, completions=completions, **kwargs) == [1.0, 0.0, 0.0]


def test_reward_functions_have_readable_names(countdown):
    assert make_reward_function(countdown).__name__ == "countdown_correct"
    assert make_format_reward(countdown).__name__ == "countdown_format"
    rg = make_task(TaskConfig(task="reasoning_gym:countdown"))
    assert make_reward_function(rg).__name__ == "reasoning_gym_countdown_correct"


def test_payload_creates_nothing_through_every_reward_path(countdown, math_task, tmp_path):
    marker = tmp_path / "FILE"
    payload = PAYLOAD.format(path=marker)
    prompts, _, kwargs = countdown_rows("x")
    assert make_reward_function(countdown)(prompts=prompts, completions=[payload], **kwargs) == [0.0]
    assert make_format_reward(countdown)(prompts=prompts, completions=[payload], **kwargs) == [0.0]

    rg = make_task(TaskConfig(task="reasoning_gym:countdown", num_problems=1))
    try:
        problem = rg.problems()[0]
        rg_kwargs = columns([{"id": problem.problem_id, "fields": problem.fields}] * 2)
        rewards = make_reward_function(rg)(
            prompts=[problem.prompt] * 2, completions=[payload, f"({payload})"], **rg_kwargs
        )
        assert rewards == [0.0, 0.0]
    finally:
        rg.close()

    math_kwargs = columns([{"id": "math/0", "fields": {"answer": "2"}}])
    completions = [f"\\boxed{{{payload}}}"]
    assert make_reward_function(math_task)(prompts=["q"], completions=completions, **math_kwargs) == [0.0]
    assert not marker.exists()
