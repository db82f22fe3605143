"""One exit convention for every command (probe.cli.run_command): bad input is one line on stderr
naming it and exit status 2; a failure mid-run exits 1; a finished command 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from probe.__main__ import cli as probe_cli
from probe.cli import ConfigError, RunFailed, run_command
from train.build_base import cli as build_base_cli
from train.grpo import cli as train_cli

ROOT = Path(__file__).resolve().parents[1]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_run_command_maps_bad_input_to_2_a_named_failure_to_1_and_success_to_0(capsys):
    def bad_input():
        raise ConfigError("n: must be >= 1")

    def failed():
        raise RunFailed("non-finite loss at step 3")

    assert run_command("cmd", bad_input) == 2
    assert _one_line(capsys.readouterr().err) == "cmd: error: n: must be >= 1"
    assert run_command("cmd", failed) == 1
    assert _one_line(capsys.readouterr().err) == "cmd: failed: non-finite loss at step 3"
    assert run_command("cmd", lambda: None) == 0
    with pytest.raises(ZeroDivisionError):  # a bug is not dressed up as bad input: its traceback, exit 1
        run_command("cmd", lambda: 1 / 0)


@pytest.fixture
def bad_recipe(tmp_path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("not_a_field: 1\n")
    return path


@pytest.mark.parametrize(
    ("command", "argv", "named"),
    [
        (probe_cli, ["run", "--config", "{bad}", "--output_dir", "{tmp}/out"], "not_a_field"),
        (probe_cli, ["run", "--n", "0", "--output_dir", "{tmp}/out"], "ProbeConfig.n"),
        (probe_cli, ["compare", "{tmp}/missing", "--output_dir", "{tmp}/out"], "missing: not a directory"),
        (probe_cli, ["plot", "{tmp}", "--output_dir", "{tmp}/out"], "not a training run dir"),
        (probe_cli, ["ppl", "--traces", "{tmp}/none.jsonl", "--output_dir", "{tmp}/out"], "none.jsonl"),
        (train_cli, ["--config", "{bad}", "--output_dir", "{tmp}/out"], "not_a_field"),
        (build_base_cli, ["--config", "{bad}", "--output_dir", "{tmp}/out"], "not_a_field"),
    ],
    ids=["probe-run-recipe", "probe-run-value", "compare", "plot", "ppl", "train", "build_base"],
)
def test_bad_input_is_one_line_naming_it_and_exit_2(command, argv, named, bad_recipe, tmp_path, capsys):
    argv = [a.format(bad=bad_recipe, tmp=tmp_path) for a in argv]
    assert command(argv) == 2
    assert named in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "module", [["probe", "compare"], ["train"], ["train.build_base"]], ids=["probe", "train", "build_base"]
)
def test_the_module_entries_exit_with_that_status(module, bad_recipe, tmp_path):
    args = ["--config", str(bad_recipe)] if module[0] != "probe" else [str(tmp_path / "missing")]
    done = subprocess.run(
        [sys.executable, "-m", *module, *args, "--output_dir", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error:" in done.stderr.strip().splitlines()[-1]
