"""Comparison at matched pass@1: options that shrink support less may simply train less, so runs are
compared where their pass@1 gains over the base are equal, never at equal steps.

Each run is a *trajectory*: its probe points in step order, each reduced to `point_values` against the
base probe (pass@1 gain, support size, entropies, the expected support classes P/E/S/O at every budget
k = 1, 2, 4, ..., n; at k = n they are the observed classes). A run's value at a pass@1 gain `level` is
taken where the trajectory first reaches the level, linearly interpolated between the two probe points
around that crossing (`at_level`); rates (SRR, NDR, SDS, NSCR) are then computed from the interpolated
classes. A run that never reaches a level has no value there. Over an entry's seeds: mean and sample
standard deviation (`spread`).

Pure functions over probe results (probe.store readers, probe.compare's one comparison); no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from probe.compare import compare_pair
from probe.metrics import SUPPORT_CLASSES, support_rates
from probe.store import ProbeResult

MODEL_KEYS = ("pass@1", "support_size", "answer_entropy", "distinct_correct", "token_entropy")
RATES = ("SRR", "NDR", "SDS", "NSCR")


def point_values(reference: ProbeResult, candidate: ProbeResult) -> dict[str, float]:
    """One probe point against the base: gain, model-level metrics, and P/E/S/O@k for every k."""
    comparison = compare_pair(reference, candidate)
    values = {key: float(comparison["metrics"][key]) for key in MODEL_KEYS}
    values["gain"] = values["pass@1"] - float(comparison["reference_metrics"]["pass@1"])
    values["step"] = float(candidate.step if candidate.step is not None else -1)
    for k, row in comparison["support_by_k"].items():
        for key in SUPPORT_CLASSES:
            values[f"{key}@{k}"] = float(row[key])
    return values


def trajectory(reference: ProbeResult, points: Sequence[ProbeResult]) -> list[dict[str, float]]:
    """`point_values` of each probe point of a run, in step order (the base itself is gain 0)."""
    return [point_values(reference, point) for point in points]


def crossing(gains: Sequence[float], level: float) -> int | None:
    """Index of the first point whose gain reaches `level` (past the first point), or None."""
    for index, gain in enumerate(gains):
        if index > 0 and gain >= level:
            return index
    return None


def at_level(points: Sequence[Mapping[str, float]], level: float) -> dict[str, float | None] | None:
    """Every value of a trajectory where its gain first reaches `level`, interpolated linearly between
    the points around that crossing; rates recomputed from the interpolated classes at each k. None when
    the run never reaches the level."""
    gains = [p["gain"] for p in points]
    index = crossing(gains, level)
    if index is None:
        return None
    before, after = points[index - 1], points[index]
    # before["gain"] < level <= after["gain"] (else the crossing would be earlier): t in (0, 1]
    t = (level - before["gain"]) / (after["gain"] - before["gain"])
    values: dict[str, float | None] = {key: before[key] + t * (after[key] - before[key]) for key in after}
    values["gain"] = level
    return with_rates(values)


def with_rates(values: Mapping[str, float | None]) -> dict[str, float | None]:
    """`values` plus SRR/NDR/SDS/NSCR@k computed from its P/E/S/O@k (None where undefined)."""
    out = dict(values)
    for k in budgets(values):
        classes = {key: max(0.0, float(values[f"{key}@{k}"])) for key in SUPPORT_CLASSES}
        for rate, value in support_rates(**classes).items():
            out[f"{rate}@{k}"] = value
    return out


def budgets(keys: Iterable[str]) -> list[int]:
    """The budgets k a point's classes are given at (from its keys), ascending."""
    return sorted({int(key.split("@")[1]) for key in keys if key.startswith("P@")})


def nearest_point(points: Sequence[Mapping[str, float]], level: float) -> int:
    """Index of the probe point nearest `level` around the trajectory's first crossing of it (the base,
    index 0, is never chosen); the highest-gain point when the run never reaches the level."""
    gains = [p["gain"] for p in points]
    index = crossing(gains, level)
    if index is None:
        return max(range(1, len(points)), key=lambda i: gains[i])
    if index > 1 and level - gains[index - 1] < gains[index] - level:
        return index - 1
    return index


def common_levels(max_gains: Sequence[float], count: int) -> list[float]:
    """`count` evenly spaced gains up to the largest one every run reaches (rounded down to 0.001);
    empty when some run never gains."""
    top = math.floor(min(max_gains) * 1000) / 1000
    if top <= 0 or count < 1:
        return []
    return [round(top * (i + 1) / count, 6) for i in range(count)]


def reference_levels(
    trajectories: Mapping[str, Sequence[Sequence[Mapping[str, float]]]], reference: str, count: int
) -> list[float]:
    """`common_levels` of the `reference` entry's seeds (plain GRPO): options are compared at the gains
    plain GRPO makes. An entry that does not reach a level is named there (`matched`); it never leaves
    the study without levels, as taking every run's gains would when one entry never gains."""
    return common_levels([max(p["gain"] for p in points) for points in trajectories[reference]], count)


def spread(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation over seeds (None values left out; std needs two)."""
    known = np.array([v for v in values if v is not None], dtype=np.float64)
    return {
        "mean": float(known.mean()) if known.size else None,
        "std": float(known.std(ddof=1)) if known.size > 1 else None,
        "seeds": int(known.size),
    }


def matched(
    trajectories: Mapping[str, Sequence[Sequence[Mapping[str, float]]]], levels: Sequence[float]
) -> dict:
    """entry -> per seed trajectory, compared at each level: {"levels": [{"level", "entries": {entry:
    {"reached": seeds reaching, "seeds": seeds, "values": {key: spread}}}, "not_reached": [entries]}]}.
    An entry reaches a level when every one of its seeds does."""
    out = []
    for level in levels:
        entries, not_reached = {}, []
        for entry, runs in trajectories.items():
            at = [at_level(points, level) for points in runs]
            reached = [values for values in at if values is not None]
            if len(reached) < len(runs):
                not_reached.append(entry)
            entries[entry] = {"reached": len(reached), "seeds": len(runs), "values": seed_summary(reached)}
        out.append({"level": level, "entries": entries, "not_reached": not_reached})
    return {"levels": out}


def seed_summary(per_seed: Sequence[Mapping[str, float | None]]) -> dict[str, dict]:
    """key -> spread over seeds of one value dict per seed (e.g. each run's point at the final budget)."""
    keys = sorted(set().union(*per_seed)) if per_seed else []
    return {key: spread([values.get(key) for values in per_seed]) for key in keys}


# --- the target and the study table


def target(final: dict, reference: str, n: int) -> dict:
    """The issue's target per option at the final budget n, on seed means at the matched point: support
    shrinks at least 40% less than under the reference entry (net shrink S - E <= 0.6 x the reference's),
    NSCR >= 0, and E > 0 (E counts problems the base never solved in its n samples)."""

    def mean(entry: str, key: str) -> float | None:
        return final[entry].get(key, {}).get("mean")

    reference_shrink = mean(reference, f"S@{n}") - mean(reference, f"E@{n}")
    out = {}
    for entry in final:
        shrink = mean(entry, f"S@{n}") - mean(entry, f"E@{n}")
        nscr, expanded = mean(entry, f"NSCR@{n}"), mean(entry, f"E@{n}")
        less = shrink <= 0.6 * reference_shrink if reference_shrink > 0 else None
        out[entry] = {
            "gain": mean(entry, "gain"),
            "net_shrink": shrink,
            "shrink_vs_reference": shrink / reference_shrink if reference_shrink > 0 else None,
            "NSCR": nscr,
            "E": expanded,
            # None for the reference, and for every entry when the reference did not shrink (S - E <= 0):
            # "shrinks 40% less than plain GRPO" is then undefined, neither met nor missed
            "met": None
            if entry == reference or less is None
            else bool(less and nscr is not None and nscr >= 0 and expanded > 0),
        }
    return out


def cell(summary: dict | None, digits: int = 3) -> str:
    """ "mean ± std" of a seed summary ("—" where undefined)."""
    if not summary or summary.get("mean") is None:
        return "—"
    text = f"{summary['mean']:.{digits}f}"
    return text + (f" ± {summary['std']:.{digits}f}" if summary.get("std") is not None else "")


def render_markdown(result: dict) -> str:
    n, final_n = result["trajectory"]["n"], result["final"]["n"]
    lines = [
        f"# Study {result['study']}: {len(result['entries'])} entries x {len(result['seeds'])} seeds, "
        "compared at matched pass@1",
        "",
        f"Trajectories: every probe point on {result['trajectory']['problems']} problems x n = {n}. "
        f"Final: {result['final']['problems']} problems x n = {final_n}, at each run's probe point nearest "
        f"the pass@1 gain {result['final']['level']} (the largest every seed of {result['reference_entry']} "
        "reaches; a run that never reaches it: its highest-gain point). Values: mean ± sample "
        "std over seeds; rates from the interpolated classes; — where undefined.",
    ]
    levels = result["matched"]["levels"]
    if levels:
        top = levels[-1]
        lines += ["", f"## At matched pass@1 gain {top['level']} (n = {n}, interpolated)", ""]
        header = ["entry", "seeds", *SUPPORT_COLUMNS]
        keys = support_keys(n)
        rows = [
            [entry, f"{e['reached']}/{e['seeds']}", *(cell(e["values"].get(k), 2) for k in keys)]
            for entry, e in top["entries"].items()
        ]
        lines += markdown_table(header, rows)
        ks = budgets({k for e in top["entries"].values() for k in e["values"]})  # with_rates: NSCR@k per P@k
        lines += ["", f"## NSCR at expected budget k, at gain {top['level']}", ""]
        rows = [
            [entry, *(cell(e["values"].get(f"NSCR@{k}")) for k in ks)] for entry, e in top["entries"].items()
        ]
        lines += markdown_table(["entry", *(f"k={k}" for k in ks)], rows)
        lines += ["", f"## Support and NSCR at each level (n = {n})", ""]
        rows = [
            [
                level["level"],
                entry,
                f"{e['reached']}/{e['seeds']}",
                *(cell(e["values"].get(k), 2) for k in ("support_size", f"S@{n}", f"E@{n}", f"NSCR@{n}")),
            ]
            for level in levels
            for entry, e in level["entries"].items()
        ]
        lines += markdown_table(["gain", "entry", "seeds reaching", "support", "S", "E", "NSCR"], rows)
        for level in levels:
            if level["not_reached"]:
                lines += [
                    f"\nNot reached by every seed at gain {level['level']}: {', '.join(level['not_reached'])}"
                ]
    else:
        lines += ["", "No common pass@1 gain: some run never rose above the base."]
    base = result["final"]["base"]
    lines += [
        "",
        f"## At n = {final_n} ({result['final']['problems']} problems)",
        "",
        f"Base: pass@1 {base['pass@1']:.4f}, support {base['support_size']}, answer H "
        f"{base['answer_entropy']:.3f}, distinct correct {base['distinct_correct']:.2f}. Target: net shrink "
        f"(S - E) at most 60% of {result['reference_entry']}'s, NSCR >= 0 and E > 0 (undefined when "
        f"{result['reference_entry']}'s net shrink is not positive).",
        "",
    ]
    header = ["entry", "pass@1 gain", "step", *SUPPORT_COLUMNS, "net shrink / ref", "target"]
    keys = support_keys(final_n)
    rows = []
    for entry, values in result["final"]["entries"].items():
        goal = result["target"][entry]
        ratio = "—" if goal["shrink_vs_reference"] is None else f"{goal['shrink_vs_reference']:.2f}"
        if entry == result["reference_entry"]:
            met = "reference"
        else:
            met = "undefined" if goal["met"] is None else ("met" if goal["met"] else "not met")
        rows.append(
            [
                entry,
                cell(values.get("gain")),
                cell(values.get("step"), 0),
                *(cell(values.get(k), 2) for k in keys),
                ratio,
                met,
            ]
        )
    noise = result["final"].get("noise_floor")
    if noise:  # the base against itself, another sampling seed: what sampling alone makes of the classes
        rows.append(
            [
                f"*base vs base (sampling seed {noise['sampling_seed']})*",
                cell({"mean": noise["gain"]}),
                "—",
                *(cell({"mean": noise.get(k)}, 2) for k in keys),
                "—",
                "noise floor",
            ]
        )
    lines += markdown_table(header, rows)
    return "\n".join(lines) + "\n"


# The support columns of the study tables, and the point values they show at budget n.
SUPPORT_COLUMNS = ["support", "P", "E", "S", "O", "SRR", "NDR", "NSCR", "answer H", "distinct correct"]


def support_keys(n: int) -> list[str]:
    return [
        "support_size",
        *(f"{c}@{n}" for c in "PESO"),
        *(f"{rate}@{n}" for rate in ("SRR", "NDR", "NSCR")),
        "answer_entropy",
        "distinct_correct",
    ]


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
