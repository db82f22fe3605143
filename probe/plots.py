"""`python -m probe plot RUN --output_dir OUT [--ppl DIR ...]`, and `plot_run` for the trainer.

Figures (PNG) of a training run's probe points RUN/probes/step-*/, the first one (normally step 0,
the base model) serving as the reference:

- pass_at_k.png       mean pass@k against k (log2 axis), one curve per probe point
- support.png         P/E/S/O against the first probe point (stacked, full budget) and the rates
- tradeoff.png        pass@1 against answer entropy and against token entropy, one point per step
- <figure>_<domain>.png   the first three per domain, when the probes are a suite of several domains
- ppl_by_class.png    perplexity of external traces by the P/E/S/O class of their problem (first
                      against last probe point), when `python -m probe ppl` output is given or
                      found at RUN/ppl/*/ppl.parquet (columns problem_id, trace_index, ppl, num_tokens)

and a study's trajectories.png (`figure_study`, written by `python -m train.study`).

Matplotlib's object API with the Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from probe import store
from probe.compare import compare_pair
from probe.files import check_output_dir
from probe.matched import at_level
from probe.metrics import SUPPORT_CLASSES, classes_by_problem, k_ladder, pass_at_k, summarize
from probe.store import ProbeResult

CLASS_NAMES = {"P": "P preserved", "E": "E expanded", "S": "S shrunk", "O": "O out of support"}
CLASS_COLOURS = {"P": "tab:green", "E": "tab:blue", "S": "tab:red", "O": "tab:gray"}


# --- loading


def load_run(run_dir: str | Path) -> list[ProbeResult]:
    """The finished probe points of a run in step order, labelled "step S"; unfinished ones are skipped
    with a warning."""
    probes = store.load_run(run_dir, skip_unfinished=True)
    return [dataclasses.replace(probe, label=f"step {probe.step}") for probe in probes]


# --- figures


def step_colours(probes: list[ProbeResult]) -> list:
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
    for key in SUPPORT_CLASSES:
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
    class_of = classes_by_problem(reference.records, candidate.records)

    figure = Figure(figsize=(7.2, 4.4), layout="constrained")
    ax = figure.add_subplot()
    width = 0.8 / max(len(ppl_sources), 1)
    for index, (name, per_problem) in enumerate(ppl_sources.items()):
        known = {pid: value for pid, value in per_problem.items() if pid in class_of}
        groups = [[v for pid, v in known.items() if class_of[pid] == key] for key in SUPPORT_CLASSES]
        positions = np.arange(len(SUPPORT_CLASSES)) + (index - (len(ppl_sources) - 1) / 2) * width
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
    counts = [sum(label == key for label in class_of.values()) for key in SUPPORT_CLASSES]
    ticks = [
        f"{CLASS_NAMES[key]}\n({count} problems)" for key, count in zip(SUPPORT_CLASSES, counts, strict=True)
    ]
    ax.set_xticks(range(len(SUPPORT_CLASSES)), ticks)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_ylabel("trace perplexity, mean per problem (per token, log scale)")
    ax.set_xlabel(f"class of the problem: {reference.label} against {candidate.label}")
    ax.set_title("perplexity of external traces by support class")
    ax.legend(fontsize="small")
    return figure


def figure_study(
    trajectories: dict, final: dict, n: int, final_n: int, noise_floor: dict | None = None
) -> Figure:
    """A study: support size and NSCR at the trajectory budget n against pass@1 gain, one line per entry
    (mean over seeds, band +- sample std, up to the gain every seed reaches), and NSCR at the final budget
    against the gain measured there (mean +- std per entry), with the base against itself (another
    sampling seed) as a dashed line. trajectories: entry -> per seed probe.matched trajectory; final:
    entry -> key -> seed spread; noise_floor: the study's base-vs-base point values."""
    figure = Figure(figsize=(14.0, 4.6), layout="constrained")
    support_ax, nscr_ax, final_ax = figure.subplots(1, 3)
    for index, (entry, runs) in enumerate(trajectories.items()):
        colour = f"C{index % 10}"
        top = min(max(p["gain"] for p in points) for points in runs)
        grid = np.linspace(0.0, max(top, 0.0), 25)[1:]  # (levels,) gains above the base
        for ax, key in ((support_ax, "support_size"), (nscr_ax, f"NSCR@{n}")):
            base = [points[0].get(key) for points in runs]
            curves = [[_value(at_level(points, g), key) for g in grid] for points in runs]
            values = np.array([[_value({key: b}, key), *c] for b, c in zip(base, curves, strict=True)])
            x = np.concatenate(([0.0], grid))  # (levels + 1,)
            with warnings.catch_warnings():  # why: a rate undefined for every seed is NaN, drawn as a gap
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(values, axis=0)  # (levels + 1,)
                std = np.nanstd(values, axis=0, ddof=1) if len(runs) > 1 else np.zeros_like(mean)
            ax.plot(x, mean, color=colour, label=f"{entry} ({len(runs)} seeds)")
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)
        values = final.get(entry, {})
        gain, nscr = values.get("gain", {}), values.get(f"NSCR@{final_n}", {})
        if gain.get("mean") is not None and nscr.get("mean") is not None:
            final_ax.errorbar(
                gain["mean"], nscr["mean"], xerr=gain.get("std") or 0, yerr=nscr.get("std") or 0,
                fmt="o", color=colour, capsize=3, label=entry,
            )  # fmt: skip
    noise = (noise_floor or {}).get(f"NSCR@{final_n}")
    if noise is not None:
        final_ax.axhline(noise, color="grey", linestyle="--", linewidth=1, label="base vs base (noise floor)")
        final_ax.legend(fontsize="x-small")
    support_ax.set_ylabel(f"support size at n={n} (problems)")
    nscr_ax.set_ylabel(f"NSCR against the base at n={n}")
    final_ax.set_ylabel(f"NSCR against the base at n={final_n}")
    for ax in (support_ax, nscr_ax):
        ax.set_xlabel(f"pass@1 gain over the base (n={n} trajectory points, interpolated)")
    final_ax.set_xlabel(f"pass@1 gain at n={final_n} (nearest the matched level)")
    for ax in (nscr_ax, final_ax):
        ax.axhline(0.0, color="black", linewidth=0.5)
    for ax in (support_ax, nscr_ax, final_ax):
        ax.grid(True, alpha=0.3)
    support_ax.set_title("support against pass@1 (bands: seeds)")
    nscr_ax.set_title("NSCR against pass@1")
    final_ax.set_title(f"at n={final_n}, mean +- std over seeds")
    support_ax.legend(fontsize="small")
    return figure


def _value(values: dict | None, key: str) -> float:
    """A trajectory value as a float; NaN where the run has none (undefined rate, level not reached)."""
    if values is None or values.get(key) is None:
        return math.nan
    return float(values[key])


def save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)
    return path


# --- entry points


def plot_run(
    run_dir: str | Path, out_dir: str | Path | None = None, ppl_dirs: list | None = None
) -> list[Path]:
    """Write the run's figures to out_dir (default RUN/plots/) and return their paths.

    ppl_dirs: `probe ppl` output dirs; default: those found at RUN/ppl/*/ppl.parquet.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    probes = load_run(run_dir)
    ppl_dirs = store.run_ppl_dirs(run_dir) if ppl_dirs is None else [Path(p) for p in ppl_dirs]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        save(figure_pass_at_k(probes), out_dir / "pass_at_k.png"),
        save(figure_support(probes), out_dir / "support.png"),
        save(figure_tradeoff(probes), out_dir / "tradeoff.png"),
    ]
    domains = probes[0].by_domain
    if len(domains) > 1:  # a suite: the same figures per domain (the pooled ones above are "overall")
        for domain in domains:
            part = [dataclasses.replace(p, records=p.by_domain.get(domain, [])) for p in probes]
            for name, make in (("pass_at_k", figure_pass_at_k), ("support", figure_support),
                               ("tradeoff", figure_tradeoff)):  # fmt: skip
                figure = make(part)
                figure.suptitle(f"domain {domain} ({len(part[0].records)} problems)")
                written.append(save(figure, out_dir / f"{name}_{domain}.png"))
    if ppl_dirs:
        sources = {path.name: store.load_ppl(path) for path in ppl_dirs}
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


def command(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    check_output_dir(args.output_dir if args.output_dir is not None else Path(args.run) / "plots")
    written = plot_run(args.run, args.output_dir, args.ppl)
    for path in written:
        print(f"wrote {path}")
    return written
