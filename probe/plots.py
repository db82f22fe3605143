"""`python -m probe plot RUN --output_dir OUT [--ppl DIR ...]`, and `plot_run` for the trainer.

Figures (PNG) of a training run's probe points RUN/probes/step-*/, the first one (normally step 0,
the base model) serving as the reference:

- pass_at_k.png       mean pass@k against k (log2 axis), one curve per probe point
- support.png         P/E/S/O against the first probe point (stacked, full budget) and the rates
- tradeoff.png        pass@1 against answer entropy and against token entropy, one point per step
- ppl_by_class.png    perplexity of external traces by the P/E/S/O class of their problem (first
                      against last probe point), when `python -m probe ppl` output is given or
                      found at RUN/ppl/*/ppl.parquet (columns problem_id, trace_index, ppl, num_tokens)

Matplotlib's object API with the Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from probe.compare import ProbeDirError, ProbeResult, compare_pair, is_run_dir, load_probe, run_probe_dirs
from probe.metrics import k_ladder, pass_at_k, summarize

CLASSES = ("P", "E", "S", "O")
CLASS_NAMES = {"P": "P preserved", "E": "E expanded", "S": "S shrunk", "O": "O out of support"}
CLASS_COLOURS = {"P": "tab:green", "E": "tab:blue", "S": "tab:red", "O": "tab:gray"}


# --- loading


def load_run(run_dir: str | Path) -> list[ProbeResult]:
    """The finished probe points of a run in step order; unfinished ones are skipped with a warning."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ProbeDirError(f"{run_dir}: not a directory")
    if not is_run_dir(run_dir):
        raise ProbeDirError(f"{run_dir}: not a training run dir (expected {run_dir}/probes/step-NNNNNN/)")
    probes = []
    for step, path in run_probe_dirs(run_dir):
        if not (path / "summary.json").is_file():
            warnings.warn(f"{path}: no summary.json (probe unfinished), left out of the plots", stacklevel=2)
            continue
        probes.append(load_probe(path, label=f"step {step}", step=step))
    if not probes:
        raise ProbeDirError(f"{run_dir}: no finished probe dir under {run_dir}/probes/")
    return probes


def load_ppl(ppl_dir: str | Path) -> dict[str, float]:
    """Per-problem mean trace perplexity from a `probe ppl` output dir (OUT/ppl.parquet)."""
    path = Path(ppl_dir) / "ppl.parquet"
    if not path.is_file():
        raise ProbeDirError(f"{ppl_dir}: no ppl.parquet (expected `python -m probe ppl` output)")
    table = pq.read_table(path)
    missing = {"problem_id", "ppl"} - set(table.column_names)
    if missing:
        raise ProbeDirError(f"{path}: missing columns {sorted(missing)}")
    per_problem: dict[str, list[float]] = {}
    for problem_id, ppl in zip(
        table.column("problem_id").to_pylist(), table.column("ppl").to_pylist(), strict=True
    ):
        per_problem.setdefault(problem_id, []).append(float(ppl))
    return {problem_id: float(np.mean(values)) for problem_id, values in per_problem.items()}


# --- figures


def step_colours(probes: list[ProbeResult]) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(len(probes) - 1, 1)) for i in range(len(probes))]


def figure_pass_at_k(probes: list[ProbeResult]) -> Figure:
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = figure.add_subplot()
    for probe, colour in zip(probes, step_colours(probes), strict=True):
        ks = k_ladder(probe.n)
        c = np.array([int(r["c"]) for r in probe.records])  # (problems,)
        curve = [float(np.mean(pass_at_k(probe.n, c, k))) for k in ks]
        ax.plot(ks, curve, marker="o", markersize=3, color=colour, label=probe.label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k, samples per problem (log2 scale)")
    ax.set_ylabel("pass@k, mean over problems (fraction)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("pass@k by probe point")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", ncols=max(1, len(probes) // 8))
    return figure


def figure_support(probes: list[ProbeResult]) -> Figure:
    reference = probes[0]
    comparisons = [compare_pair(reference, probe) for probe in probes]
    positions = np.arange(len(probes))
    labels = [str(p.step) for p in probes]
    figure = Figure(figsize=(7.2, 6.4), layout="constrained")
    classes_ax, rates_ax = figure.subplots(2, 1, sharex=True)
    bottom = np.zeros(len(probes))
    for key in CLASSES:
        heights = np.array([float(c["support"][key]) for c in comparisons])
        classes_ax.bar(positions, heights, bottom=bottom, color=CLASS_COLOURS[key], label=CLASS_NAMES[key])
        bottom += heights
    classes_ax.set_ylabel("problems (count)")
    budget, eps = comparisons[-1]["budget"], comparisons[-1]["eps"]
    classes_ax.set_title(f"support classes against {reference.label} at n={budget} (eps={eps:.3g})")
    classes_ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for key, style in (("SRR", "-o"), ("NDR", "-s"), ("SDS", "-^"), ("NSCR", "--d")):
        values = [math.nan if c["support"][key] is None else c["support"][key] for c in comparisons]
        rates_ax.plot(positions, values, style, label=key)
    rates_ax.axhline(0.0, color="black", linewidth=0.5)
    rates_ax.set_ylim(-1.05, 1.05)
    rates_ax.set_ylabel("rate (fraction; undefined not drawn)")
    rates_ax.set_xlabel("training step")
    rates_ax.set_xticks(positions, labels)
    rates_ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def figure_tradeoff(probes: list[ProbeResult]) -> Figure:
    metrics = [summarize(p.records, p.zeta) for p in probes]
    pass1 = [m["pass@1"] for m in metrics]
    figure = Figure(figsize=(10.0, 4.4), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    for ax, key, name in zip(
        axes, ("answer_entropy", "token_entropy"), ("answer entropy", "token entropy"), strict=True
    ):
        x = [m[key] for m in metrics]
        ax.plot(x, pass1, color="lightgray", zorder=1)
        points = ax.scatter(x, pass1, c=[p.step for p in probes], cmap="viridis", zorder=2)
        for probe, xi, yi in zip(probes, x, pass1, strict=True):
            ax.annotate(
                str(probe.step), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize="small"
            )
        unit = "nats, mean over problems" if key == "answer_entropy" else "nats per token, mean over samples"
        ax.set_xlabel(f"{name} ({unit})")
        ax.set_title(f"pass@1 against {name}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("pass@1, mean over problems (fraction)")
    figure.colorbar(points, ax=axes, label="training step")
    return figure


def figure_ppl_by_class(probes: list[ProbeResult], ppl_sources: dict[str, dict[str, float]]) -> Figure:
    reference, candidate = probes[0], probes[-1]
    comparison = compare_pair(reference, candidate)
    ref_c = {r["problem_id"]: int(r["c"]) for r in reference.records}
    cand_c = {r["problem_id"]: int(r["c"]) for r in candidate.records}
    shrunk, expanded = set(comparison["shrunk_ids"]), set(comparison["expanded_ids"])

    def problem_class(problem_id: str) -> str:
        if problem_id in shrunk:
            return "S"
        if problem_id in expanded:
            return "E"
        return "P" if ref_c[problem_id] >= 1 and cand_c[problem_id] >= 1 else "O"

    figure = Figure(figsize=(7.2, 4.4), layout="constrained")
    ax = figure.add_subplot()
    width = 0.8 / max(len(ppl_sources), 1)
    for index, (name, per_problem) in enumerate(ppl_sources.items()):
        known = {pid: value for pid, value in per_problem.items() if pid in ref_c}
        groups = [[v for pid, v in known.items() if problem_class(pid) == key] for key in CLASSES]
        positions = np.arange(len(CLASSES)) + (index - (len(ppl_sources) - 1) / 2) * width
        colour = f"C{index % 10}"
        for position, values in zip(positions, groups, strict=True):
            if values:
                boxes = ax.boxplot([values], positions=[position], widths=width * 0.9, patch_artist=True)
                boxes["boxes"][0].set(facecolor=colour, alpha=0.35)
            ax.scatter(np.full(len(values), position), values, s=10, color=colour)
        outside = len(per_problem) - len(known)
        ax.plot(
            [], [], "s", color=colour, label=f"{name}: {len(known)} problems ({outside} not in the probe set)"
        )
    counts = [sum(problem_class(pid) == key for pid in ref_c) for key in CLASSES]
    ticks = [f"{CLASS_NAMES[key]}\n({count} problems)" for key, count in zip(CLASSES, counts, strict=True)]
    ax.set_xticks(range(len(CLASSES)), ticks)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_ylabel("trace perplexity, mean per problem (per token, log scale)")
    ax.set_xlabel(f"class of the problem: {reference.label} against {candidate.label}")
    ax.set_title("perplexity of external traces by support class")
    ax.legend(fontsize="small")
    return figure


def save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)
    return path


# --- entry points


def find_ppl_dirs(run_dir: Path) -> list[Path]:
    return sorted(p.parent for p in (run_dir / "ppl").glob("*/ppl.parquet"))


def plot_run(
    run_dir: str | Path, out_dir: str | Path | None = None, ppl_dirs: list | None = None
) -> list[Path]:
    """Write the run's figures to out_dir (default RUN/plots/) and return their paths.

    ppl_dirs: `probe ppl` output dirs; default: those found at RUN/ppl/*/ppl.parquet.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    probes = load_run(run_dir)
    ppl_dirs = find_ppl_dirs(run_dir) if ppl_dirs is None else [Path(p) for p in ppl_dirs]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        save(figure_pass_at_k(probes), out_dir / "pass_at_k.png"),
        save(figure_support(probes), out_dir / "support.png"),
        save(figure_tradeoff(probes), out_dir / "tradeoff.png"),
    ]
    if ppl_dirs:
        sources = {path.name: load_ppl(path) for path in ppl_dirs}
        written.append(save(figure_ppl_by_class(probes, sources), out_dir / "ppl_by_class.png"))
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m probe plot", description="Figures of a training run's probes."
    )
    parser.add_argument("run", help="training run dir holding probes/step-NNNNNN/ probe dirs")
    parser.add_argument("--output_dir", default=None, help="where the PNGs go (default RUN/plots)")
    parser.add_argument(
        "--ppl",
        nargs="+",
        default=None,
        help="`python -m probe ppl` output dirs to plot by support class (default: RUN/ppl/*/ if any)",
    )
    return parser


def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    try:
        written = plot_run(args.run, args.output_dir, args.ppl)
    except ProbeDirError as error:
        raise SystemExit(f"probe plot: {error}") from None
    for path in written:
        print(f"wrote {path}")
    return written
