"""Specs for issue 11's security points: model output never runs, no verdict can be forged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from probe.tasks import TaskConfig, make_task

# The payload and variants that reach the old audit hook's module global another way.
RESET_HOOK = {
    "import": "__import__('probe.sandbox').sandbox",
    "sys_modules": "__import__('sys').modules['probe.sandbox']",
}
TOUCH = "__import__('os').system('touch {path}')"
FORGE_BODY = (
    "import os\nfor fd in range(3, 256):\n    try:\n        os.write(fd, b'{\"result\": 1.0}\\n')\n"
    "    except OSError:\n        pass\n"
)
PAYLOADS = {
    "issue": f"[setattr({RESET_HOOK['import']},'_DENIED_EVENT_PREFIXES',()), {TOUCH}]",
    "sys_modules": f"[setattr({RESET_HOOK['sys_modules']},'_DENIED_EVENT_PREFIXES',()), {TOUCH}]",
    "gc": "[[setattr(m,'_DENIED_EVENT_PREFIXES',()) for m in __import__('gc').get_objects() "
    "if type(m).__name__=='module' and m.__name__=='probe.sandbox'], " + TOUCH + "]",
    "frames": "[[f.f_globals.__setitem__('_DENIED_EVENT_PREFIXES',()) for f,_ in "
    "__import__('traceback').walk_stack(None) if '_DENIED_EVENT_PREFIXES' in f.f_globals], " + TOUCH + "]",
    "plain": TOUCH,
    "open": "open('{path}','w').write('x')",
    "subprocess": "__import__('subprocess').run(['touch','{path}'])",
    "forge_reply": f"exec({FORGE_BODY!r})",
    "forge_and_exit": f"exec({FORGE_BODY + 'os._exit(0)'!r})",
}


@pytest.fixture(scope="module")
def puzzle24():
    task = make_task(TaskConfig(task="reasoning_gym:puzzle24", num_problems=2))
    yield task
    task.close()


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_payloads_through_puzzle24_create_nothing_forge_nothing(puzzle24, name, tmp_path):
    marker = tmp_path / "F"
    problem = puzzle24.problems()[0]
    gold = puzzle24_gold(problem)
    verdict = puzzle24.judge(problem, PAYLOADS[name].replace("{path}", str(marker)))
    assert not marker.exists()
    assert verdict.correct is False
    assert [puzzle24.judge(problem, text).correct for text in (gold, "1+2+3+4", gold)] == [True, False, True]


def puzzle24_gold(problem):
    import reasoning_gym

    fields = problem.fields
    return reasoning_gym.create_dataset("puzzle24", seed=fields["seed"], size=fields["size"])[fields["index"]]["answer"]


GOLD_SCRIPT = """
import json, sys
from probe.tasks import TaskConfig, make_task
problems = {}
for name in sys.argv[1:]:
    task = make_task(TaskConfig(task="reasoning_gym:" + name, num_problems=4, seed=7))
    problems[name] = [[p.problem_id, p.prompt, p.fields] for p in task.problems()]
    import reasoning_gym
    dataset = reasoning_gym.create_dataset(name, seed=7, size=4)
    for row, index in zip(problems[name], range(4)):
        row.append(dataset[index]["answer"])
print(json.dumps(problems))
"""


def problems_in_a_process(names, hash_seed):
    env = dict(os.environ, PYTHONHASHSEED=str(hash_seed))
    output = subprocess.run([sys.executable, "-c", GOLD_SCRIPT, *names], env=env, capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    return json.loads(output)


def test_gold_answers_score_one_across_hash_seeds(monkeypatch):
    from probe.tasks import Problem

    names = ["polynomial_multiplication"]
    monkeypatch.setenv("PYTHONHASHSEED", "2")  # the scorer worker inherits it
    for name, rows in problems_in_a_process(names, hash_seed=1).items():
        task = make_task(TaskConfig(task="reasoning_gym:" + name, num_problems=4, seed=7))
        try:
            for problem_id, prompt, fields, gold in rows:
                verdict = task.judge(Problem(problem_id, prompt, fields), gold)
                assert verdict.correct is True, (name, problem_id, gold)
        finally:
            task.close()


def nested_frac(depth: int) -> str:
    text = "\\frac{1}{2}"
    for _ in range(depth - 1):
        text = "\\frac{" + text + "}{2}"
    return text


def test_deep_latex_is_not_judged_correct(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"problem": "half?", "answer": "\\frac{1}{2}"}))
    task = make_task(TaskConfig(task="math", data_path=str(path)))
    try:
        problem = task.problems()[0]
        for depth in (150, 1000):
            assert task.judge(problem, "\\boxed{" + nested_frac(depth) + "}").correct is False
        assert task.judge(problem, "\\boxed{\\frac{1}{2}}").correct is True
    finally:
        task.close()
