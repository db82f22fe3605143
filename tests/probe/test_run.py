"""probe run end to end: files and value ranges, resume after kill -9, refusals of bad input."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tiny_lm import save_random

from probe.__main__ import cli
from probe.metrics import k_ladder
from probe.store import load_problems, read_samples

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "configs/probe/countdown_tiny.yaml")
VARIABLE = ("seconds", "samples_per_second")  # wall-clock figures differ between runs


@pytest.fixture(scope="module")
def random_model_dir(tmp_path_factory):
    return save_random(tmp_path_factory.mktemp("model") / "random")


def _args(model, out, *extra):
    return [
        "run",
        "--config",
        RECIPE,
        "--model",
        str(model),
        "--output_dir",
        str(out),
        "--progress",
        "false",
        "--num_threads",
        "1",
        *extra,
    ]


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "samples").iterdir())}


def _summary(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in VARIABLE}


# --- end to end


def test_probe_run_writes_a_consistent_probe_dir(random_model_dir, tmp_path):
    out = tmp_path / "probe"
    assert cli(_args(random_model_dir, out, "--n", "8", "--num_problems", "3", "--ks", "3")) == 0
    summary = json.loads((out / "summary.json").read_text())
    table = pq.read_table(out / "problems.parquet")
    expected_columns = {"problem_id", "prompt", "fields", "n", "c", "answers", "token_entropy", "mean_length"}
    assert expected_columns | {f"pass@{k}" for k in (1, 2, 3, 4, 8)} <= set(table.column_names)
    rows = load_problems(out)
    assert len(rows) == 3 == summary["num_problems"]
    for index, row in enumerate(rows):
        samples = read_samples(out / "samples" / f"p{index:06d}.jsonl.gz")
        assert row["n"] == len(samples) == 8
        assert sum(a["count"] for a in row["answers"]) == 8
        assert (
            row["c"]
            == sum(s["correct"] for s in samples)
            == sum(a["count"] for a in row["answers"] if a["correct"])
        )
        assert (
            0
            < row["token_entropy"]
            <= math.log(len(json.loads((random_model_dir / "tokenizer.json").read_text())["model"]["vocab"]))
        )
        assert row["token_entropy"] == pytest.approx(sum(s["token_entropy"] for s in samples) / 8, rel=1e-12)
        assert 1 <= row["mean_length"] <= 24
        assert all(s["answer"] == "NA" for s in samples if not s["finished"])
        counts = [a["count"] for a in row["answers"]]
        assert counts == sorted(counts, reverse=True)
        ladder = [row[f"pass@{k}"] for k in (1, 2, 4, 8)]
        assert ladder == sorted(ladder) and all(0 <= v <= 1 for v in ladder)
    assert set(summary["metrics"]) >= {f"pass@{k}" for k in k_ladder(8)} | {"support_size", "eps", "chao1"}
    assert summary["metrics"]["eps"] == pytest.approx(-math.log(0.05) / 8, rel=1e-12)
    assert summary["n"] == 8 and summary["samples_per_second"] > 0
    assert summary["samples_per_verification_call"] >= 1
    assert summary["entropy_source"] == "full_softmax_at_temperature_before_top_p"
    assert (out / "config.json").exists()


def test_a_finished_run_rerun_changes_nothing(random_model_dir, tmp_path):
    out = tmp_path / "probe"
    args = _args(random_model_dir, out, "--n", "4", "--num_problems", "2")
    assert cli(args) == 0
    before = (_files(out), _summary(out), (out / "problems.parquet").read_bytes())
    assert cli(args) == 0
    assert (_files(out), _summary(out), (out / "problems.parquet").read_bytes()) == before


# --- resume


def _spawn(args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "probe", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_run_killed_midway_resumes_to_the_same_files(random_model_dir, tmp_path):
    """Two problems per sampler call: the resumed run must group them as the whole run does (a
    problem's token entropies depend on the batch it was sampled in, to float32 rounding)."""
    extra = ("--n", "48", "--num_problems", "10", "--batch_size", "8", "--problems_per_call", "2")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    records = resumed / "records" / "rank-00000.jsonl"
    process = _spawn(_args(random_model_dir, resumed, *extra))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        if records.exists() and records.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (resumed / "summary.json").exists(), "the run finished before it could be killed"
    done_before = records.read_bytes().count(b"\n")
    assert 2 <= done_before < 10
    with open(records, "ab") as handle:  # and a torn line, as a kill mid-write leaves
        handle.write(b'{"problem_id": "countdown/')
    assert cli(_args(random_model_dir, resumed, *extra)) == 0
    assert cli(_args(random_model_dir, whole, *extra)) == 0
    assert _files(resumed) == _files(whole)
    assert _summary(resumed) == _summary(whole)
    assert pq.read_table(resumed / "problems.parquet").equals(pq.read_table(whole / "problems.parquet"))
    assert records.read_bytes().count(b"\n") == 10


# --- bad input: a clear error, nothing written


def _refused(capsys, args, match):
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert match in err, err


def test_a_missing_model_dir_is_refused(capsys, tmp_path):
    _refused(capsys, _args(tmp_path / "nowhere", tmp_path / "out"), "is not a directory")
    assert not (tmp_path / "out").exists()


def test_a_model_that_is_not_a_causal_lm_is_refused(capsys, tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(
        tmp_path / "vit"
    )
    _refused(capsys, _args(tmp_path / "vit", tmp_path / "out"), "not a causal LM")
    assert not (tmp_path / "out").exists()


def test_unknown_task_n_below_one_and_k_above_n_are_refused(capsys, random_model_dir, tmp_path):
    out = tmp_path / "out"
    _refused(capsys, _args(random_model_dir, out, "--task", "chess"), "chess")
    _refused(capsys, _args(random_model_dir, out, "--n", "0"), "ProbeConfig.n must be >= 1")
    _refused(capsys, _args(random_model_dir, out, "--n", "4", "--ks", "8"), "k = 8 is outside 1..n")
    assert not out.exists()


def test_probe_config_refuses_an_impossible_setting_however_it_is_built():
    import dataclasses

    from probe.cli import ConfigError
    from probe.config import ProbeConfig

    with pytest.raises(ConfigError, match="ProbeConfig.top_p"):
        ProbeConfig(top_p=0.0)
    with pytest.raises(ConfigError, match="k = 8 is outside 1..n"):
        dataclasses.replace(ProbeConfig(n=8, ks=[8]), n=4)  # the trainer's probe_n override


def test_a_dir_holding_another_run_is_refused_unless_overwrite(capsys, random_model_dir, tmp_path):
    out = tmp_path / "out"
    assert cli(_args(random_model_dir, out, "--n", "2", "--num_problems", "2")) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _refused(capsys, _args(random_model_dir, out, "--n", "4", "--num_problems", "2"), "probe.n")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert cli(_args(random_model_dir, out, "--n", "4", "--num_problems", "2", "--overwrite", "true")) == 0
    assert json.loads((out / "summary.json").read_text())["n"] == 4


def test_a_tokenizer_without_pad_falls_back_to_eos_and_says_so(caplog, tmp_path):
    model = save_random(tmp_path / "nopad", with_pad=False)
    with caplog.at_level("WARNING"):
        assert cli(_args(model, tmp_path / "out", "--n", "2", "--num_problems", "1")) == 0
    assert "no pad token" in caplog.text


# --- several processes


@pytest.mark.slow
def test_two_accelerate_ranks_share_the_problems_and_match_one_process(random_model_dir, tmp_path):
    extra = ("--n", "8", "--num_problems", "5")
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli(_args(random_model_dir, one, *extra)) == 0
    launcher = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--config_file",
        str(ROOT / "configs/accelerate/cpu2.yaml"),
        "-m",
        "probe",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [*launcher, *_args(random_model_dir, two, *extra)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {p.name: p.read_bytes().count(b"\n") for p in (two / "records").iterdir()}
    assert lines == {"rank-00000.jsonl": 3, "rank-00001.jsonl": 2}, "expected two ranks sharing 5 problems"
    # each rank samples its problems several per call (the recipe's problems_per_call), so a problem's
    # batch differs from one process's: equal up to float32 rounding of the token entropies
    _assert_same_probe_to_entropy_rounding(two, one)


def test_probe_model_takes_an_in_memory_model_and_leaves_its_mode(random_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from probe.config import ProbeConfig
    from probe.run import probe_model
    from probe.tasks import TaskConfig, make_task

    model = AutoModelForCausalLM.from_pretrained(random_model_dir).train()
    tokenizer = AutoTokenizer.from_pretrained(random_model_dir)
    task = make_task(TaskConfig(num_problems=2))
    config = ProbeConfig(n=4, max_new_tokens=8)
    summary = probe_model(model, tokenizer, task, task.problems(), config, tmp_path / "p", progress=False)
    assert model.training
    assert summary == json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["num_problems"] == 2 and summary["metrics"]["num_problems"] == 2


def test_probe_of_the_tiny_base_finds_correct_answers_and_verifies_them(
    tiny_base, tiny_probe_recipe, tmp_path
):
    from probe.cli import parse
    from probe.tasks import TaskConfig, make_task

    out = tmp_path / "probe"
    args = [
        "run",
        "--config",
        str(tiny_probe_recipe),
        "--model",
        str(tiny_base),
        "--output_dir",
        str(out),
        "--n",
        "16",
        "--num_problems",
        "8",
        "--max_new_tokens",
        "16",
        "--progress",
        "false",
    ]
    assert cli(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    metrics = summary["metrics"]
    assert 0 < metrics["pass@1"] <= metrics["pass@4"] <= metrics["pass@16"] <= 1
    assert metrics["support_size"] == sum(r["c"] >= 1 for r in load_problems(out)) >= 1
    assert metrics["distinct_correct"] >= 1 / 8 and 0 <= metrics["missing_mass"] <= 1
    assert 0 < metrics["token_entropy"] < math.log(64) and metrics["answer_entropy"] > 0
    (task_config,) = parse((TaskConfig,), ["--config", str(tiny_probe_recipe), "--num_problems", "8"])
    task = make_task(task_config)
    problems = {p.problem_id: p for p in task.problems()}
    for index, row in enumerate(load_problems(out)):
        for sample in read_samples(out / "samples" / f"p{index:06d}.jsonl.gz"):
            if sample["finished"]:  # the stored verdict is the task's verdict of the stored text
                verdict = task.judge(problems[row["problem_id"]], sample["completion"])
                assert (verdict.answer, verdict.correct) == (sample["answer"], sample["correct"])


class LengthScorer:
    """Stands in for the isolated worker: by the answer's length, a timeout, a crash, or a wrong answer."""

    def call(self, kind, answer, **args):
        from probe.sandbox import ScorerCrashed, ScorerTimeout

        if len(answer) % 3 == 0:
            raise ScorerTimeout("past the limit")
        if len(answer) % 3 == 1:
            raise ScorerCrashed("worker died")
        return 0.0

    def close(self):
        pass


@pytest.mark.parametrize("problems_per_call", [1, 3])
def test_verifier_timeouts_and_crashes_are_counted_in_records_and_summary(
    tiny_base, tmp_path, problems_per_call
):
    from collections import Counter

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from probe.config import ProbeConfig
    from probe.run import probe_model
    from probe.tasks import TaskConfig, make_task

    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    # an isolated-scorer task (compact: the whole completion is the answer) on prompts the tiny base
    # answers with expressions of many lengths, so the stand-in scorer times out, crashes and scores
    task = make_task(TaskConfig(task="reasoning_gym:basic_arithmetic", num_problems=1))
    task.scorer = LengthScorer()
    problems = make_task(TaskConfig(seed=99, num_problems=4, max_numbers=3, max_target=30)).problems()
    config = ProbeConfig(n=32, max_new_tokens=16, problems_per_call=problems_per_call)
    summary = probe_model(model, tokenizer, task, problems, config, tmp_path / "p", progress=False)
    per_sample, per_problem = Counter(), Counter()
    for index, row in enumerate(load_problems(tmp_path / "p")):
        samples = read_samples(tmp_path / "p" / "samples" / f"p{index:06d}.jsonl.gz")
        counted = Counter(s["reason"] for s in samples if s["reason"] is not None)
        assert row["reasons"] == dict(counted)
        assert row["unfinished"] == counted["unfinished"] == sum(not s["finished"] for s in samples)
        per_sample.update(counted)
        per_problem.update(row["reasons"])
    assert summary["reasons"] == dict(sorted(per_sample.items()))
    assert summary["reasons"]["verifier_timeout"] >= 1 and summary["reasons"]["verifier_error"] >= 1
    assert summary["unfinished_samples"] == per_sample["unfinished"]
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["reasons"] == summary["reasons"]


# --- several problems per sampler call


def _without_entropy(rows: list[dict]) -> tuple[list[dict], np.ndarray]:
    return [{k: v for k, v in r.items() if k != "token_entropy"} for r in rows], np.array(
        [r["token_entropy"] for r in rows]
    )


def test_problems_per_call_changes_no_sample_and_no_record(random_model_dir, tmp_path):
    """Problems sampled together (one left-padded batch, each with its own generator) give the
    samples and records of one at a time: every completion, answer, verdict, count and pass@k is
    equal; token entropies (per sample, per record, in the summary) differ by float32 rounding
    only, since the HF backend's logits come from matrix products of another batch shape."""
    extra = ("--n", "12", "--num_problems", "5", "--batch_size", "8")
    one, three = tmp_path / "one", tmp_path / "three"
    assert cli(_args(random_model_dir, one, *extra)) == 0
    assert cli(_args(random_model_dir, three, *extra, "--problems_per_call", "3")) == 0
    _assert_same_probe_to_entropy_rounding(three, one)


def _assert_same_probe_to_entropy_rounding(out: Path, reference: Path) -> None:
    """Two probe dirs of the same problems and seeds whose problems were batched differently: every
    sample, record and metric equal, token entropies (per sample, per record, in the summary) to 1e-6."""
    assert sorted(_files(reference)) == sorted(_files(out))
    for name in _files(reference):
        mine, entropy_mine = _without_entropy(read_samples(out / name))
        theirs, entropy_theirs = _without_entropy(read_samples(reference / name))
        assert mine == theirs
        np.testing.assert_allclose(entropy_mine, entropy_theirs, rtol=0, atol=1e-6)
    rows, entropy_rows = _without_entropy(load_problems(out))
    rows_one, entropy_rows_one = _without_entropy(load_problems(reference))
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in rows_one
    ]
    np.testing.assert_allclose(entropy_rows, entropy_rows_one, rtol=0, atol=1e-6)
    metrics, metrics_one = _summary(out)["metrics"], _summary(reference)["metrics"]
    assert sorted(metrics) == sorted(metrics_one)
    for key, value in metrics.items():
        if "entropy" in key:
            assert value == pytest.approx(metrics_one[key], rel=0, abs=1e-6)
        else:
            assert value == metrics_one[key], key


def test_the_vllm_backend_under_several_processes_is_refused(capsys, monkeypatch, random_model_dir, tmp_path):
    """Every process's engine would take GPU 0: refused before anything is loaded or written."""
    import probe.run

    class TwoProcesses:
        num_processes, process_index, is_main_process = 2, 0, True

    monkeypatch.setattr(probe.run, "process_state", lambda: TwoProcesses())
    _refused(capsys, _args(random_model_dir, tmp_path / "out", "--backend", "vllm"), "as one process")
    assert not (tmp_path / "out").exists()


def test_the_vllm_backend_without_vllm_installed_is_refused(capsys, random_model_dir, tmp_path):
    """The default venv has no vllm: one line naming the backend and how to install it, exit 2."""
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed in this venv")
    _refused(capsys, _args(random_model_dir, tmp_path / "out", "--backend", "vllm"), "needs the vllm package")
    assert not (tmp_path / "out").exists()
