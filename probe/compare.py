"""`python -m probe compare REF CAND [CAND ...] --output_dir OUT [--intersect]`

Compares candidate probe results with a reference (normally the base model): support classes
P/E/S/O and rates at the full budget and as expected counts at each k = 2^i, pass@1 and pass@n,
token and answer entropy, answer-level support, missing mass and Chao1, and which problems shrank
or expanded; pooled over all problems and per domain (a suite probe: the paper's Table 1 view).
Writes OUT/compare.json and OUT/compare.md and prints the tables.

REF and CAND are probe dirs (`python -m probe run` output) or a training RUN dir, which stands for
all its RUN/probes/step-*/ dirs in step order. A RUN dir given as REF contributes its first probe
point as the reference and its later ones as candidates.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from probe.files import check_output_dir
from probe.metrics import (
    SUPPORT_CLASSES,
    answer_level_support,
    classify,
    correct_answers,
    epsilon,
    expected_support_classes,
    k_ladder,
    pass_at_k,
    summarize,
    support_rates,
)
from probe.store import ProbeDirError, ProbeResult, is_run_dir, load_probe, load_run


def load_sources(path: str | Path) -> list[ProbeResult]:
    """A probe dir -> [it]; a training RUN dir -> its probe points, in step order."""
    return load_run(path) if is_run_dir(path) else [load_probe(path)]


# --- checks


def check_comparable(reference: ProbeResult, candidate: ProbeResult, intersect: bool) -> list[str]:
    """Refuse what cannot be compared; return notes on what --intersect relaxed."""
    for key in ("task", "temperature", "top_p"):
        ref_value, cand_value = reference.summary.get(key), candidate.summary.get(key)
        if ref_value != cand_value:
            raise ProbeDirError(
                f"{key} differs: {reference.label} has {key}={ref_value!r}, {candidate.label} has "
                f"{key}={cand_value!r}; such probes measure different things and are not compared"
            )
    notes = []
    ref_ids = {r["problem_id"] for r in reference.records}
    cand_ids = {r["problem_id"] for r in candidate.records}
    if ref_ids != cand_ids:
        if not intersect:
            raise ProbeDirError(
                f"problem sets differ: {reference.label} has {len(ref_ids)} problems, {candidate.label} "
                f"{len(cand_ids)}, {len(ref_ids & cand_ids)} in common "
                f"(e.g. only in reference: {sorted(ref_ids - cand_ids)[:3]}, "
                f"only in candidate: {sorted(cand_ids - ref_ids)[:3]}); pass --intersect to compare "
                "on the common problems"
            )
        if not ref_ids & cand_ids:
            raise ProbeDirError(f"{reference.label} and {candidate.label} have no problem in common")
        notes.append(
            f"{candidate.label}: compared on the {len(ref_ids & cand_ids)} common problems (--intersect)"
        )
    if reference.n != candidate.n:
        if not intersect:
            raise ProbeDirError(
                f"budgets differ: {reference.label} has n={reference.n}, {candidate.label} n={candidate.n}; "
                "pass --intersect to compare at the smaller n"
            )
        small = min(reference.n, candidate.n)
        notes.append(
            f"{candidate.label}: budgets differ (reference n={reference.n}, candidate n={candidate.n}); "
            f"support classes are expected counts at k={small} from each model's own unbiased pass@k "
            f"(so they may be fractional), and answer entropy, missing mass and Chao1 are at each model's "
            "own n, so they are not comparable"
        )
    return notes


def restrict(probe: ProbeResult, problem_ids: set[str]) -> ProbeResult:
    records = [r for r in probe.records if r["problem_id"] in problem_ids]
    return ProbeResult(probe.path, probe.label, probe.summary, records, probe.step)


# --- the comparison


def classes_at(ref_c: np.ndarray, cand_c: np.ndarray, ref_n: int, cand_n: int, k: int) -> dict:
    """Expected P/E/S/O and rates at budget k (observed when k equals both budgets)."""
    classes = expected_support_classes(pass_at_k(ref_n, ref_c, k), pass_at_k(cand_n, cand_c, k))
    if k == ref_n == cand_n:  # exactly the observed classes: report integers
        classes = {key: int(round(value)) for key, value in classes.items()}
    return {**classes, **support_rates(**classes)}


def compare_records(ref_records: list[dict], cand_records: list[dict], reference: ProbeResult,
                    candidate: ProbeResult) -> dict:  # fmt: skip
    """Classes, rates and answer-level support of aligned records (one domain, or all pooled)."""
    ref_c = np.array([int(r["c"]) for r in ref_records])  # (problems,)
    cand_c = np.array([int(r["c"]) for r in cand_records])  # (problems,)
    budget = min(reference.n, candidate.n)
    by_k = {}
    for k in k_ladder(budget):
        by_k[str(k)] = {
            "eps": epsilon(k, reference.zeta),
            **classes_at(ref_c, cand_c, reference.n, candidate.n, k),
        }
    if reference.n == candidate.n:  # observed classes; must agree with the expected ones at k = n
        labels = classify(ref_c, cand_c)
        observed = {key: int(np.sum(labels == key)) for key in SUPPORT_CLASSES}
        assert observed == {key: by_k[str(budget)][key] for key in "PESO"}, (observed, by_k[str(budget)])
    return {
        "num_problems": len(ref_records),
        "reference_metrics": summarize(ref_records, reference.zeta),
        "metrics": summarize(cand_records, candidate.zeta),
        "support": by_k[str(budget)],
        "support_by_k": by_k,
        "answer_level": answer_level_support(
            [correct_answers(r) for r in ref_records], [correct_answers(r) for r in cand_records]
        ),
    }


def compare_pair(reference: ProbeResult, candidate: ProbeResult, intersect: bool = False) -> dict:
    """Everything compare reports for one candidate against the reference: pooled over all problems
    (the top-level keys) and per domain (`domains`, by the reference's domain of each problem)."""
    notes = check_comparable(reference, candidate, intersect)
    common = {r["problem_id"] for r in reference.records} & {r["problem_id"] for r in candidate.records}
    reference, candidate = restrict(reference, common), restrict(candidate, common)
    ids = sorted(common)
    ref_by_id = {r["problem_id"]: r for r in reference.records}
    cand_by_id = {r["problem_id"]: r for r in candidate.records}
    budget = min(reference.n, candidate.n)
    pooled = compare_records([ref_by_id[i] for i in ids], [cand_by_id[i] for i in ids], reference, candidate)
    domains = {}
    for domain, records in reference.by_domain.items():
        domain_ids = sorted(r["problem_id"] for r in records)
        domains[domain] = compare_records(
            [ref_by_id[i] for i in domain_ids], [cand_by_id[i] for i in domain_ids], reference, candidate
        )
    labels = classify([int(ref_by_id[i]["c"]) for i in ids], [int(cand_by_id[i]["c"]) for i in ids])
    return {
        "label": candidate.label,
        "path": str(candidate.path),
        "step": candidate.step,
        "n": candidate.n,
        "budget": budget,
        "eps": epsilon(budget, reference.zeta),
        **pooled,
        "domains": domains,
        # At each model's own budget: solved by one, never by the other.
        "shrunk_ids": [i for i, label in zip(ids, labels, strict=True) if label == "S"],
        "expanded_ids": [i for i, label in zip(ids, labels, strict=True) if label == "E"],
        "notes": notes,
    }


def compare(reference_path: str | Path, candidate_paths: list[str | Path], intersect: bool = False) -> dict:
    """Load the sources and compare every candidate with the reference; returns compare.json's content."""
    reference, *earlier_points = load_sources(reference_path)
    candidates = earlier_points + [probe for path in candidate_paths for probe in load_sources(path)]
    if not candidates:
        raise ProbeDirError(
            f"nothing to compare {reference.label} with: give a candidate probe dir or run dir"
        )
    results = [compare_pair(reference, candidate, intersect) for candidate in candidates]
    return {
        "reference": {
            "label": reference.label,
            "path": str(reference.path),
            "step": reference.step,
            "n": reference.n,
            "task": reference.summary.get("task"),
            "temperature": reference.summary.get("temperature"),
            "top_p": reference.summary.get("top_p"),
            "zeta": reference.zeta,
            "metrics": summarize(reference.records, reference.zeta),
            "domains": {d: summarize(records, reference.zeta) for d, records in reference.by_domain.items()},
        },
        "intersect": intersect,
        "candidates": results,
    }


# --- tables


def fmt(value) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, float) and value == int(value) and abs(value) < 1e9:
        return str(int(value))
    return f"{value:.4g}"


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return lines


def model_row(label: str, n: int, metrics: dict) -> list:
    return [
        label, n, metrics["num_problems"], metrics["pass@1"], metrics[f"pass@{n}"], metrics["support_size"],
        metrics["eps"], metrics["token_entropy"], metrics["answer_entropy"], metrics["distinct_correct"],
        metrics["missing_mass"], metrics["chao1"],
    ]  # fmt: skip


def render_markdown(result: dict) -> str:
    ref = result["reference"]
    lines = [
        f"# probe compare: reference {ref['label']}",
        "",
        f"Task {ref['task']}, temperature {ref['temperature']}, top_p {ref['top_p']}, "
        f"reference n={ref['n']}, zeta={ref['zeta']} (eps = -ln(zeta)/budget). Entropies in nats. "
        "Undefined rates have a zero denominator.",
        "",
        "## Models",
        "",
    ]
    header = ["model", "n", "problems", "pass@1", "pass@n", "support", "eps", "token H", "answer H",
              "distinct correct", "missing mass", "Chao1"]  # fmt: skip
    rows = [model_row(ref["label"] + " (reference)", ref["n"], ref["metrics"])]
    rows += [model_row(c["label"], c["n"], c["metrics"]) for c in result["candidates"]]
    lines += table(header, rows)
    lines += ["", "## Support against the reference at the full budget", ""]
    header = ["candidate", "budget", "eps", "P", "E", "S", "O", "SRR", "NDR", "SDS", "NSCR",
              "answers preserved", "answers new", "answers lost"]  # fmt: skip
    rows = []
    for c in result["candidates"]:
        s, a = c["support"], c["answer_level"]
        classes = [s[key] for key in ("P", "E", "S", "O", "SRR", "NDR", "SDS", "NSCR")]
        rows.append([c["label"], c["budget"], c["eps"], *classes, a["preserved"], a["new"], a["lost"]])
    lines += table(header, rows)
    if len(ref["domains"]) > 1:
        lines += domain_tables(result)
    for c in result["candidates"]:
        lines += ["", f"## {c['label']}: expected support classes by budget k", ""]
        keys = ["eps", "P", "E", "S", "O", "SRR", "NDR", "SDS", "NSCR"]
        lines += table(
            ["k", *keys], [[k, *(row[key] for key in keys)] for k, row in c["support_by_k"].items()]
        )
        lines += ["", f"Shrunk ({len(c['shrunk_ids'])}): " + (", ".join(c["shrunk_ids"]) or "none")]
        lines += ["", f"Expanded ({len(c['expanded_ids'])}): " + (", ".join(c["expanded_ids"]) or "none")]
        lines += [f"\nNote: {note}" for note in c["notes"]]
    return "\n".join(lines) + "\n"


def domain_tables(result: dict) -> list[str]:
    """The paper's Table 1 view: every metric per domain and pooled (overall), one table per candidate."""
    lines = ["", "## By domain (pooled: overall)", ""]
    header = ["domain", "problems", "pass@1 ref", "pass@1", "pass@n", "support ref", "support", "answer H",
              "distinct correct", "P", "E", "S", "O", "SRR", "NDR", "SDS", "NSCR", "answers preserved",
              "answers new", "answers lost"]  # fmt: skip
    for c in result["candidates"]:
        rows = []
        for domain, part in [*c["domains"].items(), ("overall", c)]:
            ref_m, m, s, a = part["reference_metrics"], part["metrics"], part["support"], part["answer_level"]
            rows.append([
                domain, part["num_problems"], ref_m["pass@1"], m["pass@1"], m[f"pass@{c['n']}"],
                ref_m["support_size"], m["support_size"], m["answer_entropy"], m["distinct_correct"],
                *(s[key] for key in ("P", "E", "S", "O", "SRR", "NDR", "SDS", "NSCR")),
                a["preserved"], a["new"], a["lost"],
            ])  # fmt: skip
        lines += [f"{c['label']} against {result['reference']['label']}:", "", *table(header, rows), ""]
    return lines


# --- command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m probe compare", description=__doc__.split("\n\n")[1])
    parser.add_argument("reference", help="reference probe dir (normally the base model) or training run dir")
    parser.add_argument("candidates", nargs="*", help="candidate probe dirs or training run dirs")
    parser.add_argument("--output_dir", required=True, help="where compare.json and compare.md are written")
    parser.add_argument(
        "--intersect",
        action="store_true",
        help="compare on the common problems and at the smaller budget n instead of refusing "
        "(different tasks, temperatures or top_p are always refused)",
    )
    return parser


def command(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    output_dir = check_output_dir(args.output_dir)
    # --- compare
    result = compare(args.reference, args.candidates, intersect=args.intersect)
    # --- save
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(result)
    (output_dir / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    (output_dir / "compare.md").write_text(markdown)
    print(markdown)
    print(f"wrote {output_dir / 'compare.md'} and {output_dir / 'compare.json'}")
    return result
