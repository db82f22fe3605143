"""Write hand-built probe dirs and run dirs through probe.store's own writers, for compare/plot tests.

A problem is given as a list of (answer, count, correct) triples over its n samples; n, c, the
answer histogram, pass@k columns and summary.json follow from it, so classes are known by
construction. `domains` (problem_id -> domain) makes a suite's probe dir.
"""

from __future__ import annotations

from pathlib import Path

from probe.metrics import k_ladder, pass_at_k, summarize
from probe.store import ProbeStore, probe_dir

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
    domains: dict[str, str] | None = None,
) -> Path:
    """Write path/config.json, problems.parquet and (unless summary=False) summary.json."""
    store = ProbeStore(path)
    config = {"task": {"task": task}, "probe": {"temperature": temperature, "top_p": top_p, "zeta": 0.05}}
    store.start(config, overwrite=False)
    records = []
    for problem_id, answers in problems.items():
        answers = sorted(answers, key=lambda a: -a[1])  # count-descending, as the probe writes them
        entropy = token_entropy[problem_id] if isinstance(token_entropy, dict) else token_entropy
        records.append(
            {
                "problem_id": problem_id,
                **({"domain": domains[problem_id]} if domains else {}),
                "prompt": f"prompt of {problem_id}",
                "fields": {},
                "n": sum(count for _, count, _ in answers),
                "c": sum(count for _, count, correct in answers if correct),
                "answers": [
                    {"answer": a, "count": count, "correct": correct} for a, count, correct in answers
                ],
                "token_entropy": float(entropy),
                "mean_length": 10.0,
                "unfinished": 0,
                "reasons": {},
            }
        )
    n = records[0]["n"]
    c = [r["c"] for r in records]
    store.write_problems(records, {f"pass@{k}": pass_at_k(n, c, k) for k in k_ladder(n)})
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
        store.write_summary(body)
    return path


def write_run_dir(run: Path, steps: dict[int, dict[str, Problem]], **kwargs) -> Path:
    """A training run dir with RUN/probes/step-NNNNNN/ probe dirs."""
    for step, problems in steps.items():
        write_probe_dir(probe_dir(run, step), problems, **kwargs)
    return run
