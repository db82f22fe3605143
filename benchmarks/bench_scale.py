"""How the probe's cost grows: samples/s and peak RSS against n and against the number of problems.

    python benchmarks/bench_scale.py [--model DIR] [--figure docs/scaling.png]

Each point is one `python -m probe run` of the probe recipe (configs/probe/countdown_tiny.yaml, HF
backend, its problems_per_call and batch_size) in a fresh child process: samples/s is summary.json's
(sampling, verification and storage; model loading excluded), peak RSS the child's whole-process peak
(the interpreter, torch and the model included: the flat part), and "distinct answers" the verified
answers summed over problems (what the probe keeps in memory besides one chunk of samples per
problem sampled together). Two sweeps: n = 32 ... 8192 on --problems problems, and 1 ... 200
problems at n = --problems_n. Prints a markdown table; writes the figure. Other CPU-heavy processes
slow every point: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench_probe import ROOT, ensure_model, probe_child


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "runs/base/countdown_tiny"), help="base model dir")
    parser.add_argument("--ns", default="32,128,512,2048,8192", help="the n sweep")
    parser.add_argument("--problems", type=int, default=10, help="problems of the n sweep")
    parser.add_argument("--problem_counts", default="1,10,50,200", help="the problems sweep")
    parser.add_argument("--problems_n", type=int, default=64, help="n of the problems sweep")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--figure", default=str(ROOT / "docs/scaling.png"))
    return parser.parse_args(argv)


def point(model: Path, n: int, problems: int, args) -> dict:
    rss, seconds, summary = probe_child(model, n, problems, args.batch_size, args.threads)
    return {
        "n": n,
        "problems": problems,
        "samples": n * problems,
        "samples_per_s": summary["samples_per_second"],
        "peak_rss_mb": rss,
        "distinct_answers": summary["verified_answers"],
        "wall_s": seconds,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| n | problems | samples | samples/s | peak RSS (MB) | distinct answers |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['problems']} | {r['samples']} | {r['samples_per_s']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['distinct_answers']} |"
        )
    return "\n".join(lines)


def figure(by_n: list[dict], by_problems: list[dict], path: Path, note: str) -> None:
    # why: matplotlib only for the figure, after every measurement
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, rows, key, label in ((axes[0], by_n, "n", "n (samples per problem)"),
                                 (axes[1], by_problems, "problems", "problems"),):  # fmt: skip
        x = [r[key] for r in rows]
        ax.plot(x, [r["samples_per_s"] for r in rows], "o-", color="tab:blue")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("samples/s", color="tab:blue")
        ax.set_ylim(bottom=0)
        twin = ax.twinx()
        twin.plot(x, [r["peak_rss_mb"] for r in rows], "s--", color="tab:red")
        twin.set_ylabel("peak RSS (MB)", color="tab:red")
        twin.set_ylim(bottom=0)
    axes[0].set_title(f"n sweep, {by_n[0]['problems']} problems")
    axes[1].set_title(f"problems sweep, n = {by_problems[0]['n']}")
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    args = parse_args(argv)
    model = ensure_model(Path(args.model))
    before = os.getloadavg()[0]
    print(f"load average before: {os.getloadavg()}  (2 cores here; other jobs slow every figure)")
    by_n = [point(model, int(n), args.problems, args) for n in args.ns.split(",")]
    by_problems = [point(model, args.problems_n, int(p), args) for p in args.problem_counts.split(",")]
    print(f"load average after: {os.getloadavg()}")
    print(f"\nn sweep ({args.problems} problems)\n" + table(by_n))
    print(f"\nproblems sweep (n = {args.problems_n})\n" + table(by_problems))
    note = f"HF backend, 1 thread; 1-min load average {before:.1f} before, {os.getloadavg()[0]:.1f} after"
    figure(by_n, by_problems, Path(args.figure), note)
    print(f"\nwrote {args.figure}")
    return {"by_n": by_n, "by_problems": by_problems}


if __name__ == "__main__":
    main()
