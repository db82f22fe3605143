"""Specs for issue 11's security points: model output never runs, no verdict can be forged, the scorer
sees the entry the prompt was made from, and deep LaTeX is bounded.

Every payload goes through every verifier path (probe tasks and reward functions; countdown, math,
each reasoning-gym grammar family, the opted-in code scorer) and must create nothing, win nothing, and
leave the next verdicts right. The full matrix is `slow`; the default suite runs it on the issue's
data set (puzzle24), math, countdown and the per-call code path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from probe.grammar import REJECTED_BY_GRAMMAR, TOO_DEEP, TOO_LONG
from probe.sandbox import IsolatedScorer, ScorerCrashed
from probe.scorer_audit import CODE, COMPARES, GRAMMAR, REASONING_GYM_SCORERS, decode_entry
from probe.tasks import (
    NA,
    AnswerForm,
    Problem,
    Reason,
    TaskConfig,
    TaskSuite,
    Verdict,
    count_reasons,
    countdown_prompt,
    make_task,
)
from train.rewards import make_reward_function

# --- payloads: the issue's, and variants that reach the old audit hook's module global other ways

TOUCH = "__import__('os').system('touch {path}')"
SANDBOX_MODULE = {
    "import": "__import__('probe.sandbox').sandbox",
    "sys_modules": "__import__('sys').modules['probe.sandbox']",
}
FORGE_BODY = (
    "import os\nfor fd in range(256):\n    try:\n        os.write(fd, b'{\"result\": 1.0}\\n')\n"
    "    except OSError:\n        pass\n"
)
PAYLOADS = {
    "issue": f"[setattr({SANDBOX_MODULE['import']},'_DENIED_EVENT_PREFIXES',()), {TOUCH}]",
    "sys_modules": f"[setattr({SANDBOX_MODULE['sys_modules']},'_DENIED_EVENT_PREFIXES',()), {TOUCH}]",
    "gc": "[[setattr(m,'_DENIED_EVENT_PREFIXES',()) for m in __import__('gc').get_objects() "
    "if type(m).__name__=='module' and m.__name__=='probe.sandbox'], " + TOUCH + "]",
    "frames": "[[f.f_globals.__setitem__('_DENIED_EVENT_PREFIXES',()) for f,_ in "
    "__import__('traceback').walk_stack(None) if '_DENIED_EVENT_PREFIXES' in f.f_globals], " + TOUCH + "]",
    "plain": TOUCH,
    "open": "open('{path}','w').write('x')",
    "subprocess": "__import__('subprocess').run(['touch','{path}'])",
    "ctypes": "__import__('ctypes').CDLL(None).system(b'touch {path}')",
    "forge_reply": f"exec({FORGE_BODY!r})",
    "forge_and_exit": f"exec({FORGE_BODY + 'os._exit(0)'!r})",
    "socket": "__import__('socket').create_connection(('127.0.0.1', 22)).send(b'x')",
    "fork_bomb": "[__import__('os').fork() for _ in range(64)]",
    "memory_bomb": "' ' * (1 << 40)",
    "huge_power": "9**9**9**9",
    "unicode_name": 'ｅｘｅｃ(\'open("{path}","w")\')',
}


# Pure arithmetic: inside the sympy families' and LaTeX grammars, so it may reach a scorer; bounded by
# the call's time limit (the worker is killed and restarted), never evaluated as anything but numbers.
ARITHMETIC_PAYLOADS = {"huge_power"}


def payload_texts(tmp_path):
    """{name: (payload text, marker path it tries to create)}."""
    return {
        name: (text.replace("{path}", str(tmp_path / name)), tmp_path / name)
        for name, text in PAYLOADS.items()
    }


# --- every verifier path: (task config, how a bare answer becomes a completion)

FAST = 1.5  # verifier_timeout_seconds: the huge-power payload costs one timeout per path

RG_COMPOSITE = TaskConfig(
    task="reasoning_gym:composite",
    num_problems=2,
    verifier_timeout_seconds=FAST,
    reasoning_gym_code_scorers=["composite"],
    reasoning_gym_kwargs=json.dumps({"datasets": [{"name": "string_insertion", "weight": 1, "config": {}}]}),
)
GRAMMAR_SETS = sorted(name for name, audit in REASONING_GYM_SCORERS.items() if audit.kind == GRAMMAR)
DEFAULT_PATHS = ["countdown", "math", "reasoning_gym:puzzle24", "reasoning_gym:composite"]
ALL_PATHS = [
    "countdown",
    "math",
    *(f"reasoning_gym:{name}" for name in GRAMMAR_SETS),
    "reasoning_gym:composite",
]


class Path_:
    """One verifier path: its task, a problem, a correct and a wrong completion, and a wrapper."""

    def __init__(self, name, math_file):
        if name == "countdown":
            self.task = make_task(TaskConfig(task="countdown"))
            self.problem = Problem(
                "countdown/3_5/8", countdown_prompt([3, 5], 8), {"numbers": [3, 5], "target": 8}
            )
            self.gold, self.wrong, self.wrap = "3+5", "3*5", str
        elif name == "math":
            self.task = make_task(
                TaskConfig(task="math", data_path=str(math_file), verifier_timeout_seconds=FAST)
            )
            self.problem = self.task.problems()[0]
            self.gold, self.wrong = "\\frac{1}{2}", "\\frac{1}{3}"
            self.wrap = lambda answer: "\\boxed{" + answer + "}"
        else:
            fast = TaskConfig(task=name, num_problems=2, verifier_timeout_seconds=FAST)
            config = RG_COMPOSITE if name == RG_COMPOSITE.task else fast
            self.task = make_task(config)
            self.problem = self.task.problems()[0]
            self.gold = self.problem.fields["entry"]["answer"]
            self.wrong = {"reasoning_gym:n_queens": "Q Q", "reasoning_gym:string_insertion": "A"}.get(
                name, "1"
            )
            self.wrap = str
        self.code_path = name == RG_COMPOSITE.task

    def close(self):
        self.task.close()


@pytest.fixture(scope="module")
def math_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("math") / "half.jsonl"
    path.write_text(json.dumps({"problem": "Half?", "answer": "\\frac{1}{2}"}))
    return path


def check_path(name, math_file, tmp_path):
    path = Path_(name, math_file)
    try:
        payloads = payload_texts(tmp_path)
        completions = [path.wrap(text) for text, _ in payloads.values()]
        verdicts = path.task.judge_many(path.problem, completions)
        assert not [marker for _, marker in payloads.values() if marker.exists()], name
        assert [v.correct for v in verdicts] == [False] * len(payloads), name
        if not path.code_path:  # not one payload holding code got past the grammar to a scorer
            code = [
                v for payload, v in zip(payloads, verdicts, strict=True) if payload not in ARITHMETIC_PAYLOADS
            ]
            assert all(v.answer == NA for v in code), (name, verdicts)
            refused = Reason.OUTSIDE_GRAMMAR if name == "countdown" else Reason.REJECTED_BY_GRAMMAR
            reasons = {v.reason for v in code}  # the long payloads are past a length bound first
            assert refused in reasons and reasons <= {refused, Reason.TOO_LONG}, (name, verdicts)
        after = path.task.judge_many(
            path.problem, [path.wrap(path.gold), path.wrap(path.wrong), path.wrap(path.gold)]
        )
        assert [v.correct for v in after] == [True, False, True], (name, after)

        # the same through the reward function, as TRL calls it
        reward = make_reward_function(path.task)
        texts = [*completions, path.wrap(path.gold), path.wrap(path.wrong)]
        fields = json.dumps(path.problem.fields)
        columns = {"problem_id": [path.problem.problem_id] * len(texts), "fields": [fields] * len(texts)}
        logged = {}
        prompts = [path.problem.prompt] * len(texts)
        rewards = reward(prompts=prompts, completions=texts, **columns, log_metric=logged.__setitem__)
        assert rewards == [0.0] * len(payloads) + [1.0, 0.0], name
        counted = {
            key.rsplit("/", 1)[1]: value for key, value in logged.items() if value
        }  # the logged counts
        assert counted == {reason: float(n) for reason, n in count_reasons(verdicts).items()}, name
        assert not [marker for _, marker in payloads.values() if marker.exists()], name
    finally:
        path.close()


@pytest.mark.parametrize("name", DEFAULT_PATHS)
def test_payloads_create_nothing_and_forge_nothing(name, math_file, tmp_path):
    check_path(name, math_file, tmp_path)


def test_payloads_through_math_answer_classes_create_nothing_and_keep_the_classes_right(math_file, tmp_path):
    """The probe's answer classes (math-verify equivalence, in the worker) see the same extracted texts:
    payloads stay NA (never sent), and the worker's grouping of real wrong answers stays right after them."""
    path = Path_("math", math_file)
    try:
        payloads = payload_texts(tmp_path)
        texts = [text for text, _ in payloads.values()] + ["0.5", "1/2", "2", "2.0", "-3"]
        verdicts = path.task.judge_many(path.problem, [path.wrap(text) for text in texts])
        forms = [AnswerForm(v.answer, text, 1, v.correct) for text, v in zip(texts, verdicts, strict=True)]
        classes = path.task.answer_classes(path.problem, forms)
        assert not [marker for _, marker in payloads.values() if marker.exists()]
        hostile = len(payloads)
        code = [i for i, name in enumerate(payloads) if name not in ARITHMETIC_PAYLOADS]
        assert all(classes[i] == NA for i in code), classes[:hostile]
        gold = path.problem.fields["answer"]
        assert classes[hostile:] == [gold, gold, "2", "2", "-3"], classes[hostile:]
    finally:
        path.close()


def test_payloads_through_a_two_domain_suite_create_nothing_and_forge_nothing(math_file, tmp_path):
    """A training mixture's reward (countdown + math in one TaskSuite, each completion routed by its
    `domain` column) and the suite's probe path: every payload in both domains is refused or wrong, nothing
    is created, and golds and wrong answers in one batch keep their verdicts after them."""
    paths = {"countdown": Path_("countdown", math_file), "math": Path_("math", math_file)}
    suite = TaskSuite({domain: path.task for domain, path in paths.items()})
    try:
        payloads = payload_texts(tmp_path)
        rows = []  # (domain, completion, expected reward)
        for domain, path in paths.items():
            rows += [(domain, path.wrap(text), 0.0) for text, _ in payloads.values()]
            rows += [(domain, path.wrap(path.gold), 1.0), (domain, path.wrap(path.wrong), 0.0)]
        problems = {d: dataclasses.replace(p.problem, domain=d) for d, p in paths.items()}
        for domain, path in paths.items():  # the probe path: the suite hands each problem to its task
            texts = [path.wrap(text) for text, _ in payloads.values()] + [path.wrap(path.gold)]
            verdicts = suite.task_of(problems[domain]).judge_many(problems[domain], texts)
            assert [v.correct for v in verdicts] == [False] * len(payloads) + [True], domain
        reward = make_reward_function(suite)
        columns = {
            "problem_id": [problems[d].problem_id for d, _, _ in rows],
            "fields": [json.dumps(problems[d].fields) for d, _, _ in rows],
            "domain": [d for d, _, _ in rows],
        }
        prompts = [problems[d].prompt for d, _, _ in rows]
        rewards = reward(prompts=prompts, completions=[c for _, c, _ in rows], **columns)
        assert rewards == [expected for _, _, expected in rows]
        assert not [marker for _, marker in payloads.values() if marker.exists()]
    finally:
        suite.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(ALL_PATHS) - set(DEFAULT_PATHS)))
def test_payloads_create_nothing_and_forge_nothing_on_every_path(name, math_file, tmp_path):
    check_path(name, math_file, tmp_path)


def test_payloads_that_reach_the_worker_directly_are_contained(tmp_path):
    """Past the grammar (a grammar bug), straight into puzzle24's parse_expr in the persistent worker:
    the confinement stops every side effect, and naive forgeries are caught by the protocol."""
    task = make_task(TaskConfig(task="reasoning_gym:puzzle24", num_problems=1, verifier_timeout_seconds=FAST))
    try:
        problem = task.problems()[0]
        gold = problem.fields["entry"]["answer"]
        for name, (text, marker) in payload_texts(tmp_path).items():
            try:
                score = task.scorer.call("reasoning_gym", fields=problem.fields, answer=text)
            except ScorerCrashed:
                score = None  # a forged or out-of-protocol reply: refused, the worker restarted
            except Exception as error:  # noqa: BLE001 - a timeout (huge power): also not a verdict
                score = type(error).__name__
            assert score != 1.0 and not marker.exists(), name
            assert task.scorer.call("reasoning_gym", fields=problem.fields, answer=gold) == 1.0, name
        assert task.scorer.restarts >= 2  # the two forgeries at least
        assert {"landlock", "seccomp", "network_namespace", "rlimits"} <= set(task.scorer.layers)
    finally:
        task.close()


def test_code_that_runs_in_a_scorer_can_fake_only_its_own_verdict(tmp_path):
    """The documented limit, and why the grammar is the defence: code running in the process that
    computes a verdict can read what it needs to fake it. In per-call mode that is the one verdict."""
    task = make_task(RG_COMPOSITE)
    try:
        problem = task.problems()[0]
        nonce_thief = (
            "import os, json, traceback\n"
            "for f, _ in traceback.walk_stack(None):\n"
            "    if 'nonce' in f.f_locals:\n"
            "        reply = json.dumps({'result': 1.0, 'nonce': f.f_locals['nonce']}) + '\\n'\n"
            "        os.write(f.f_locals['write_end'], reply.encode())\n"
            "        os._exit(0)\n"
        )
        assert task.verify(problem, f"exec({nonce_thief!r})").correct is True
        assert task.verify(problem, "AB").correct is False  # the next call runs in a fresh process
        assert task.verify(problem, problem.fields["entry"]["answer"]).correct is True
    finally:
        task.close()


def test_one_answer_cannot_poison_the_next_in_per_call_mode():
    """A hostile answer that runs (opted-in code scorer) leaves files behind, and so does the next; the
    second forges its verdict only if it finds the first one's files: it must not find them."""
    task = make_task(RG_COMPOSITE)
    try:
        problem = task.problems()[0]
        plant = (  # first switch off the audit hook (replace its code): the OS layers must hold alone
            "import gc, os\n"
            "for f in gc.get_objects():\n"
            "    if type(f).__name__ == 'function' and f.__qualname__ == '_audit_hook.<locals>.hook':\n"
            "        f.__code__ = (lambda denied: lambda event, args: denied and None)(()).__code__\n"
            "for path in ('poison', '../poison', os.environ['HOME'] + '/poison'):\n"
            "    try:\n        open(path, 'w').write('x')\n    except OSError:\n        pass\n"
        )
        forge_if_planted = (
            "import os, json, traceback\n"
            "planted = False\n"
            "for path in ('poison', '../poison', os.environ['HOME'] + '/poison'):\n"
            "    planted = planted or os.path.exists(path)\n"
            "if planted:\n"
            "    for f, _ in traceback.walk_stack(None):\n"
            "        if 'nonce' in f.f_locals:\n"
            "            reply = json.dumps({'result': 1.0, 'nonce': f.f_locals['nonce']}) + '\\n'\n"
            "            os.write(f.f_locals['write_end'], reply.encode())\n"
            "            os._exit(0)\n"
        )
        assert task.verify(problem, f"exec({plant!r})").correct is False
        assert task.verify(problem, f"exec({forge_if_planted!r})").correct is False
        # the same two in one child would forge: the test can fail
        assert task.verify(problem, f"exec({plant + forge_if_planted!r})").correct is True
    finally:
        task.close()


def test_code_scorers_are_refused_unless_the_recipe_opts_in():
    config = TaskConfig(
        task="reasoning_gym:composite", reasoning_gym_kwargs=RG_COMPOSITE.reasoning_gym_kwargs
    )
    from probe.cli import ConfigError

    with pytest.raises(ConfigError, match=r"composite.*reasoning_gym_code_scorers"):
        make_task(config)
    assert make_task(RG_COMPOSITE).scorer.per_call is True
    assert make_task(TaskConfig(task="reasoning_gym:puzzle24")).scorer.per_call is False


# --- the protocol, against a worker that misbehaves on purpose

FAKE_WORKER = r"""
import json, os, sys, time
out = os.dup(1)
def send(message):
    os.write(out, (json.dumps(message) + "\n").encode())
send({"id": "ready", "result": ["fake"]})
for line in sys.stdin:
    request = json.loads(line)
    rid, kind = request["id"], request["kind"]
    if kind == "wrong_id":
        send({"id": "0" * 32, "result": 1.0})
    elif kind == "forged_then_real":
        forged, real = json.dumps({"id": rid, "result": 1.0}), json.dumps({"id": rid, "result": 0.0})
        os.write(out, (forged + "\n" + real + "\n").encode())
        continue
    elif kind == "no_id":
        send({"result": 1.0})
    elif kind == "extra_key":
        send({"id": rid, "result": 1.0, "also": 1})
    elif kind == "late_stray":
        send({"id": rid, "result": 0.0})
        time.sleep(0.3)
        send({"id": rid, "result": 1.0})
        continue
    else:
        send({"id": rid, "result": request["args"]["value"]})
"""


class FakeScorer(IsolatedScorer):
    worker_code = FAKE_WORKER


@pytest.mark.parametrize("kind", ["wrong_id", "forged_then_real", "no_id", "extra_key"])
def test_out_of_protocol_replies_fail_the_call_and_restart_the_worker(kind):
    scorer = FakeScorer((), timeout_seconds=5, memory_mb=512)
    try:
        assert scorer.call("echo", value=0.25) == 0.25
        pid = scorer._process.pid
        with pytest.raises(ScorerCrashed):
            scorer.call(kind, value=0.0)
        assert scorer.restarts == 1
        assert scorer.call("echo", value=0.5) == 0.5
        assert scorer._process.pid != pid
    finally:
        scorer.close()


def test_output_between_calls_restarts_the_worker_before_the_next_call():
    scorer = FakeScorer((), timeout_seconds=5, memory_mb=512)
    try:
        assert scorer.call("late_stray", value=0.0) == 0.0
        time.sleep(0.6)  # the stray line has arrived
        assert scorer.call("echo", value=0.75) == 0.75
        assert scorer.restarts == 1
    finally:
        scorer.close()


# --- point 3: the scorer sees the very entry the prompt was made from

# data sets with no gold answer: the reference answer reasoning-gym keeps in the metadata, if any
REFERENCE_ANSWERS = {  # of the decoded metadata
    "graph_color": lambda metadata: json.dumps(metadata["possible_answer"]),
    "propositional_logic": lambda metadata: metadata["example_answer"],
    "rubiks_cube": lambda metadata: metadata["example_correct_answer"],
}
NO_REFERENCE = {"boxnet", "rush_hour"}  # reasoning-gym gives neither a gold nor an example answer
SUPPORTED = sorted(name for name, audit in REASONING_GYM_SCORERS.items() if audit.kind != CODE)
DEFAULT_GOLD_SETS = ["polynomial_multiplication", "arc_agi", "puzzle24", "intermediate_integration",
                     "string_insertion", "spiral_matrix", "graph_color", "knights_knaves"]  # fmt: skip

GOLD_SCRIPT = """
import contextlib, json, sys
from probe.tasks import TaskConfig, make_task
rows = {}
with contextlib.redirect_stdout(sys.stderr):  # some generators print
    for name in sys.argv[1:]:
        task = make_task(TaskConfig(task="reasoning_gym:" + name, num_problems=2, seed=7))
        rows[name] = [[p.problem_id, p.prompt, json.dumps(p.fields, sort_keys=True)] for p in task.problems()]
print(json.dumps(rows))
"""


def problems_made_in_another_process(names, hash_seed):
    env = dict(os.environ, PYTHONHASHSEED=str(hash_seed))
    command = [sys.executable, "-c", GOLD_SCRIPT, *names]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def check_gold_across_hash_seeds(names, monkeypatch):
    """Problems made with PYTHONHASHSEED=1, judged through each task (grammar, then the scorer) by one
    worker with PYTHONHASHSEED=2 (this process: random). One worker for all: its handler reads the
    data set from the fields, and a worker start costs seconds."""
    monkeypatch.setenv("PYTHONHASHSEED", "2")  # the scorer worker inherits it
    made = problems_made_in_another_process(names, hash_seed=1)
    shared = IsolatedScorer(("reasoning_gym",), timeout_seconds=30, memory_mb=4096)
    try:
        for name, rows in made.items():
            task = make_task(TaskConfig(task="reasoning_gym:" + name, num_problems=2, seed=7))
            task.scorer = shared
            for problem_id, prompt, fields in rows:  # fields as the training data set stores them
                problem = Problem(problem_id, prompt, json.loads(fields))
                entry = decode_entry(problem.fields["entry"])
                gold = (
                    REFERENCE_ANSWERS[name](entry["metadata"])
                    if name in REFERENCE_ANSWERS
                    else entry["answer"]
                )
                verdict = task.judge(problem, gold)
                if name == "intermediate_integration" and "Integral(" in gold:
                    assert verdict == Verdict(NA, False, REJECTED_BY_GRAMMAR)  # refused on purpose
                else:
                    assert verdict.correct is True, (name, problem_id, gold, verdict)
        assert shared.restarts == 0
    finally:
        shared.close()


def test_gold_answers_score_one_across_hash_seeds(monkeypatch):
    check_gold_across_hash_seeds(DEFAULT_GOLD_SETS, monkeypatch)


@pytest.mark.slow
def test_every_supported_data_set_scores_its_gold_across_hash_seeds(monkeypatch):
    names = [name for name in SUPPORTED if name not in NO_REFERENCE]
    assert len(names) == 103 and {REASONING_GYM_SCORERS[n].kind for n in names} == {COMPARES, GRAMMAR}
    check_gold_across_hash_seeds(names, monkeypatch)


# --- point 4: deep LaTeX


def nested_frac(depth: int, denominator: str = "2") -> str:
    """\\frac{\\frac{...\\frac{1}{2}...}{d}}{d}: brace depth `depth`; value 1/2 / d^(depth-1)."""
    text = "\\frac{1}{2}"
    for _ in range(depth - 1):
        text = "\\frac{" + text + "}{" + denominator + "}"
    return text


def test_deep_latex_is_na_and_counted_not_judged_by_an_inner_part(math_file):
    task = make_task(TaskConfig(task="math", data_path=str(math_file), max_latex_depth=16))
    try:
        problem = task.problems()[0]
        # the case: 1/2^150 (1,509 characters) was judged equal to 1/2
        assert task.judge(problem, "\\boxed{" + nested_frac(150) + "}") == Verdict(NA, False, TOO_DEEP)
        # 1,000 deep: as \frac it is past the length limit first; as bare braces it fits (2,000 characters)
        assert task.judge(problem, "\\boxed{" + nested_frac(1000) + "}") == Verdict(NA, False, TOO_LONG)
        assert task.judge(problem, "\\boxed{" + "{" * 1000 + "}" * 1000 + "}") == Verdict(NA, False, TOO_DEEP)
        # at the bound math-verify decides by value; one past it, NA
        assert task.judge(problem, "\\boxed{" + nested_frac(16, denominator="1") + "}").correct is True
        assert task.judge(problem, "\\boxed{" + nested_frac(17, denominator="1") + "}") == Verdict(
            NA, False, TOO_DEEP
        )
        start = time.perf_counter()
        verdict = task.judge(problem, "\\boxed{" + "{" * 500_000 + "}" * 500_000 + "}")  # 1 MB of braces
        assert verdict == Verdict(NA, False, TOO_LONG)
        assert time.perf_counter() - start < task.config.verifier_timeout_seconds
        assert task.judge(problem, "\\boxed{\\frac{1}{2}}").correct is True
        # counted where training logs it
        reward, logged = make_reward_function(task), {}
        texts = [
            "\\boxed{" + nested_frac(150) + "}",
            "\\boxed{" + "{" * 1000 + "}" * 1000 + "}",
            "\\boxed{1/2}",
        ]
        columns = {"problem_id": [problem.problem_id] * 3, "fields": [json.dumps(problem.fields)] * 3}
        assert reward(prompts=["q"] * 3, completions=texts, **columns, log_metric=logged.__setitem__) == [
            0,
            0,
            1,
        ]
        assert logged[f"rewards/{reward.__name__}/too_deep"] == 2.0
    finally:
        task.close()
