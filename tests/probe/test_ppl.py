"""probe ppl: perplexity of external traces, by hand and through the command."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch
from tiny_lm import save_random

from probe.__main__ import cli
from probe.ppl import trace_nll
from probe.store import ProbeStore


class Bigram(torch.nn.Module):
    """p(next | current) = PROBS[current]: logits are log-probabilities looked up per token."""

    PROBS = [[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]]

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding.from_pretrained(torch.tensor(self.PROBS).log())

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table(input_ids))


def test_trace_nll_by_hand_with_a_bigram_model():
    # prompt [0, 2], trace [1, 2, 1]: the prompt's own tokens are not scored;
    # p(1|2) = 0.6, p(2|1) = 0.8, p(1|2) = 0.6 -> ppl = (0.6 * 0.8 * 0.6) ** (-1/3)
    # prompt [1], trace [0]: p(0|1) = 0.1 -> ppl = 10; batched together (right padding)
    (nll_a, count_a), (nll_b, count_b) = trace_nll(Bigram(), [([0, 2], [1, 2, 1]), ([1], [0])], batch_size=2)
    assert count_a == 3 and count_b == 1
    assert math.exp(nll_a / count_a) == pytest.approx((0.6 * 0.8 * 0.6) ** (-1 / 3), rel=1e-6)
    assert math.exp(nll_b / count_b) == pytest.approx(10.0, rel=1e-6)


def _incremental_nll(model, prompt, trace):
    """One forward per trace token on the unpadded prefix: the independent reference."""
    total = 0.0
    for t, token in enumerate(trace):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + trace[:t]])).logits[0, -1].double()
        total -= torch.log_softmax(logits, -1)[token].item()
    return total


def test_trace_nll_of_a_real_model_matches_one_prefix_at_a_time(tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(save_random(tmp_path / "m")).eval()
    pairs = [([5, 18, 7, 19], [4, 6, 1]), ([5, 19], [7, 8, 9, 10, 1]), ([6, 6, 6, 6, 19], [4])]
    for (prompt, trace), (nll, count) in zip(pairs, trace_nll(model, pairs, batch_size=3), strict=True):
        assert count == len(trace)
        assert nll == pytest.approx(_incremental_nll(model, prompt, trace), rel=1e-4)


def _probe_dir(path, solved: dict[str, bool]):
    store = ProbeStore(path)
    path.mkdir()
    rows = [
        {
            "problem_id": pid,
            "prompt": "",
            "fields": {},
            "n": 1,
            "c": int(ok),
            "answers": [],
            "token_entropy": 0.0,
            "mean_length": 1.0,
            "unfinished": 0,
            "reasons": {},
        }
        for pid, ok in solved.items()
    ]
    store.write_problems(rows, {})
    return str(path)


def test_ppl_command_writes_per_trace_rows_and_class_means(tmp_path):
    model = save_random(tmp_path / "model")
    traces = tmp_path / "traces.jsonl"
    lines = [
        {"problem_id": "a", "prompt": "1 2=3:", "trace": "1+2"},
        {"problem_id": "a", "prompt": "1 2=3:", "trace": "2+1"},
        {"problem_id": "b", "prompt": "4 5=9:", "trace": "4+5"},
    ]
    traces.write_text("".join(json.dumps(line) + "\n" for line in lines))
    ref = _probe_dir(tmp_path / "ref", {"a": True, "b": False})
    cand = _probe_dir(tmp_path / "cand", {"a": True, "b": True})
    out = tmp_path / "out"
    args = [
        "ppl",
        "--model",
        str(model),
        "--traces",
        str(traces),
        "--output_dir",
        str(out),
        "--compare",
        ref,
        cand,
    ]
    assert cli(args) == 0
    table = pq.read_table(out / "ppl.parquet").to_pylist()
    assert [(r["problem_id"], r["trace_index"], r["num_tokens"]) for r in table] == [
        ("a", 0, 3),
        ("a", 1, 3),
        ("b", 0, 3),
    ]
    assert all(
        1.0 < r["ppl"] < len(json.loads((model / "tokenizer.json").read_text())["model"]["vocab"]) * 50
        for r in table
    )
    summary = json.loads((out / "ppl_summary.json").read_text())
    mean_a = (table[0]["ppl"] + table[1]["ppl"]) / 2
    assert summary["per_problem"]["a"] == pytest.approx(mean_a, rel=1e-12)
    assert summary["mean_ppl"] == pytest.approx((mean_a + table[2]["ppl"]) / 2, rel=1e-12)
    assert summary["by_class"]["P"] == {"num_problems": 1, "mean_ppl": pytest.approx(mean_a, rel=1e-12)}
    assert summary["by_class"]["E"]["mean_ppl"] == pytest.approx(table[2]["ppl"], rel=1e-12)
    assert summary["by_class"]["S"] == {"num_problems": 0, "mean_ppl": None}


def test_ppl_refuses_unknown_problems_and_malformed_lines(capsys, tmp_path):
    model = save_random(tmp_path / "model")
    traces = tmp_path / "traces.jsonl"
    traces.write_text(json.dumps({"problem_id": "countdown/nothing/1", "trace": "1+2"}) + "\n")
    args = [
        "ppl",
        "--model",
        str(model),
        "--traces",
        str(traces),
        "--output_dir",
        str(tmp_path / "out"),
        "--num_problems",
        "3",
    ]
    assert cli(args) == 2
    assert "not in the probe set" in capsys.readouterr().err
    traces.write_text('{"problem_id": "a"}\n')
    assert cli(args) == 2
    assert "traces.jsonl:1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_trace_without_prompt_gets_its_problem_prompt_from_the_probe_set(tmp_path):
    from probe.tasks import TaskConfig, make_task

    problem = make_task(TaskConfig(num_problems=2)).problems()[1]
    model = save_random(tmp_path / "model")
    traces = tmp_path / "traces.jsonl"
    traces.write_text(json.dumps({"problem_id": problem.problem_id, "trace": "1+2"}) + "\n")
    given = tmp_path / "given.jsonl"
    given.write_text(json.dumps({"problem_id": "x", "prompt": problem.prompt, "trace": "1+2"}) + "\n")
    ppl = []
    for path, out in ((traces, "a"), (given, "b")):
        args = ["ppl", "--model", str(model), "--traces", str(path), "--output_dir", str(tmp_path / out)]
        assert cli([*args, "--num_problems", "2"]) == 0
        ppl.append(pq.read_table(tmp_path / out / "ppl.parquet").column("ppl")[0].as_py())
    assert ppl[0] == ppl[1]
