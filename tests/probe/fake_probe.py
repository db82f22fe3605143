"""Write hand-built probe dirs and run dirs in the format of the design doc, for compare/plot tests.

A problem is given as a list of (answer, count, correct) triples over its n samples; n, c, the
answer histogram, pass@k columns and summary.json follow from it, so classes are known by
construction.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from probe.metrics import k_ladder, pass_at_k, summarize

Problem = list[tuple[str, int, bool]]


def write_probe_dir(
    path: Path,
    problems: dict[str, Problem],
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    task: str = "countdown",
    token_entropy: float | dict[str, float] = 0.5,
    summary: bool = True,
) -> Path:
    """Write path/config.json, problems.parquet and (unless summary=False) summary.json."""
    path.mkdir(parents=True, exist_ok=True)
    config = {"task": {"task": task}, "probe": {"temperature": temperature, "top_p": top_p, "zeta": 0.05}}
    (path / "config.json").write_text(json.dumps(config))
    records = []
    for problem_id, answers in problems.items():
        answers = sorted(answers, key=lambda a: -a[1])  # count-descending, as the probe writes them
        entropy = token_entropy[problem_id] if isinstance(token_entropy, dict) else token_entropy
        records.append(
            {
                "problem_id": problem_id,
                "prompt": f"prompt of {problem_id}",
                "fields": json.dumps({}),
                "n": sum(count for _, count, _ in answers),
                "c": sum(count for _, count, correct in answers if correct),
                "answers": [
                    {"answer": a, "count": count, "correct": correct} for a, count, correct in answers
                ],
                "token_entropy": float(entropy),
                "mean_length": 10.0,
            }
        )
    n = records[0]["n"]
    columns = {key: [r[key] for r in records] for key in records[0]}
    columns["answers"] = [json.dumps(a) for a in columns["answers"]]
    for k in k_ladder(n):
        columns[f"pass@{k}"] = [float(pass_at_k(r["n"], r["c"], k)) for r in records]
    pq.write_table(pa.table(columns), path / "problems.parquet")
    if summary:
        body = {
            "metrics": summarize(records),
            "n": n,
            "temperature": temperature,
            "top_p": top_p,
            "task": task,
            "model": f"model-{path.name}",
            "seed": 0,
            "num_problems": len(records),
            "seconds": 1.0,
            "samples_per_second": 1.0,
            "config": config,
            "versions": {},
        }
        (path / "summary.json").write_text(json.dumps(body))
    return path


def write_run_dir(run: Path, steps: dict[int, dict[str, Problem]], **kwargs) -> Path:
    """A training run dir with RUN/probes/step-NNNNNN/ probe dirs."""
    for step, problems in steps.items():
        write_probe_dir(run / "probes" / f"step-{step:06d}", problems, **kwargs)
    return run
