"""`python -m probe plot` and plot_run on a hand-built run dir with 3 probe points."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_probe import write_probe_dir
from matplotlib.image import imread
from test_compare import CANDIDATE, REFERENCE

from probe import plots
from probe.store import ProbeDirError

FIGURES = ["pass_at_k.png", "support.png", "tradeoff.png"]


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    write_probe_dir(run / "probes" / "step-000000", REFERENCE, token_entropy=0.9)
    write_probe_dir(run / "probes" / "step-000050", {**CANDIDATE, "p1": REFERENCE["p1"]}, token_entropy=0.7)
    write_probe_dir(run / "probes" / "step-000100", CANDIDATE, token_entropy=0.4)
    return run


def write_ppl(directory, per_problem):
    directory.mkdir(parents=True)
    rows = [(pid, i, value) for pid, values in per_problem.items() for i, value in enumerate(values)]
    table = {
        "problem_id": [r[0] for r in rows],
        "trace_index": [r[1] for r in rows],
        "ppl": [r[2] for r in rows],
        "num_tokens": [10] * len(rows),
    }
    pq.write_table(pa.table(table), directory / "ppl.parquet")
    return directory


def assert_drawn_png(path):
    assert path.is_file() and path.stat().st_size > 5_000
    image = imread(path)  # (height, width, channels)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 20  # more than a blank canvas


def test_plot_run_writes_every_figure_to_run_plots(run):
    written = plots.plot_run(run)
    assert [p.name for p in written] == FIGURES
    assert all(p.parent == run / "plots" for p in written)
    for path in written:
        assert_drawn_png(path)


def test_plot_command_with_ppl_writes_the_perplexity_figure(run, tmp_path, capsys):
    base = write_ppl(tmp_path / "ppl_base", {"p0": [2.0, 2.5], "p1": [3.0], "p2": [8.0], "zz": [4.0]})
    written = plots.command([str(run), "--output_dir", str(tmp_path / "out"), "--ppl", str(base)])
    assert [p.name for p in written] == [*FIGURES, "ppl_by_class.png"]
    for path in written:
        assert_drawn_png(path)
    assert f"wrote {tmp_path / 'out' / 'ppl_by_class.png'}" in capsys.readouterr().out


def test_ppl_dirs_under_run_are_found(run):
    write_ppl(run / "ppl" / "base", {"p0": [2.0], "p3": [9.0]})
    assert [p.name for p in plots.plot_run(run)][-1] == "ppl_by_class.png"


def test_figures_have_labelled_axes(run):
    probes = plots.load_run(run)
    pass_at_k = plots.figure_pass_at_k(probes)
    support = plots.figure_support(probes)
    tradeoff = plots.figure_tradeoff(probes)
    ppl = plots.figure_ppl_by_class(probes, {"base": {"p0": 2.0, "p1": 3.0}})
    labelled = [pass_at_k.axes[0], *support.axes, tradeoff.axes[0], ppl.axes[0]]
    assert all(ax.get_ylabel() for ax in labelled)
    assert all(
        ax.get_xlabel() for ax in [pass_at_k.axes[0], support.axes[1], *tradeoff.axes[:2], ppl.axes[0]]
    )
    assert "(log2 scale)" in pass_at_k.axes[0].get_xlabel() and pass_at_k.axes[0].get_xscale() == "log"
    assert "nats" in tradeoff.axes[0].get_xlabel() and "nats" in tradeoff.axes[1].get_xlabel()
    assert tradeoff.axes[-1].get_ylabel() == "training step"  # the colour bar


def test_support_figure_draws_the_classes_of_each_step(run):
    probes = plots.load_run(run)
    classes_ax = plots.figure_support(probes).axes[0]
    # 4 classes x 3 steps stacked bars; heights at step 100 are P=2, E=1, S=1, O=1
    heights = [patch.get_height() for patch in classes_ax.patches]
    assert len(heights) == 12
    assert heights[2::3] == [2.0, 1.0, 1.0, 1.0]
    assert heights[0::3] == [3.0, 0.0, 0.0, 2.0]


def test_unfinished_probe_point_is_left_out_with_a_warning(run):
    write_probe_dir(run / "probes" / "step-000150", CANDIDATE, summary=False)
    with pytest.warns(UserWarning, match="step-000150: no summary.json"):
        probes = plots.load_run(run)
    assert [p.step for p in probes] == [0, 50, 100]


def test_a_dir_that_is_not_a_run_is_refused_by_name(run, tmp_path):
    probe_dir = run / "probes" / "step-000000"
    with pytest.raises(ProbeDirError, match=f"{probe_dir}: not a training run dir"):
        plots.command([str(probe_dir)])
    with pytest.raises(ProbeDirError, match="no ppl.parquet"):
        plots.command([str(run), "--ppl", str(tmp_path)])


def test_the_study_figure_draws_the_noise_floor_on_the_final_panel():
    from test_matched import TRAJECTORY

    final = {"grpo": {"gain": {"mean": 0.1, "std": 0.01}, "NSCR@4": {"mean": -0.2, "std": 0.05}}}
    without = plots.figure_study({"grpo": [TRAJECTORY]}, final, 4, 4)
    figure = plots.figure_study({"grpo": [TRAJECTORY]}, final, 4, 4, {"NSCR@4": 0.11, "gain": 0.0})
    dashed = [line for line in figure.axes[2].get_lines() if line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in dashed] == [[0.11, 0.11]]
    assert not [line for line in without.axes[2].get_lines() if line.get_linestyle() == "--"]
