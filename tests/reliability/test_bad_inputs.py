"""Bad input is one line naming the file or key, exit status 2, never a traceback (issue 11, "Clear errors
instead of tracebacks"), one row per input below. Rows marked "ours" go beyond the issue's list.

Each row builds its bad input from good parts (the untrained tiny model, the tiny probe recipe, probe dirs
written by tests/probe/fake_probe.py), runs the real command in-process and reads its stderr.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fake_probe import write_probe_dir, write_run_dir
from train_runs import train_args

from probe.__main__ import cli as probe_cli
from train.build_base import cli as build_base_cli
from train.grpo import cli as train_cli

COMMANDS = {"probe": probe_cli, "train": train_cli, "build_base": build_base_cli}
PROBLEMS = {"p1": [("3", 2, True), ("4", 2, False)], "p2": [("5", 4, False)]}


@dataclass
class Inputs:
    """Good parts to spoil, under one test's tmp dir."""

    tmp: Path
    model_dir: Path
    recipe: Path

    def model(self) -> Path:
        copy = self.tmp / "model"
        if not copy.exists():
            shutil.copytree(self.model_dir, copy)
        return copy

    def write(self, name: str, data: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def probe(self, *extra: str, model: Path | None = None, recipe: Path | None = None) -> list[str]:
        return ["run", "--config", str(recipe or self.recipe), "--model", str(model or self.model()),
                "--output_dir", str(self.tmp / "out"), "--n", "2", "--max_new_tokens", "4",
                "--progress", "false", *extra]  # fmt: skip

    def train(self, *extra: str, model: Path | None = None, recipe: Path | None = None) -> list[str]:
        args = train_args(model or self.model(), self.tmp / "run", *extra)
        return args if recipe is None else ["--config", str(recipe), *args[2:]]

    def ppl(self, traces: Path, *extra: str, model: Path | None = None) -> list[str]:
        return ["ppl", "--config", str(self.recipe), "--model", str(model or self.model()), "--traces",
                str(traces), "--output_dir", str(self.tmp / "ppl"), *extra]  # fmt: skip

    def probe_dirs(self) -> tuple[Path, Path]:
        return write_probe_dir(self.tmp / "ref", PROBLEMS), write_probe_dir(self.tmp / "cand", PROBLEMS)

    def traces(self, *lines: dict) -> Path:
        return self.write("traces.jsonl", "".join(json.dumps(line) + "\n" for line in lines))


def truncated_weights(inputs: Inputs, size: int | None) -> Path:
    model = inputs.model()
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if size is None else data[:size])
    return model


def without(inputs: Inputs, name: str) -> Path:
    model = inputs.model()
    (model / name).unlink()
    return model


def spoiled(inputs: Inputs, name: str, data: bytes) -> Path:
    model = inputs.model()
    (model / name).write_bytes(data)
    return model


def summary_of_wrong_shape(inputs: Inputs, summary) -> list[str]:
    ref, cand = inputs.probe_dirs()
    (cand / "summary.json").write_text(json.dumps(summary))
    return ["compare", str(ref), str(cand), "--output_dir", str(inputs.tmp / "compare")]


def corrupt_records_line(inputs: Inputs) -> list[str]:
    """A probe dir whose records hold a bad line with good lines after it (not a torn last line)."""
    out = inputs.tmp / "out"
    args = inputs.probe("--num_problems", "3")
    assert probe_cli(args) == 0
    records = out / "records" / "rank-00000.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    records.write_bytes(lines[0] + b'{"problem_id": \x00garbage\n' + b"".join(lines[1:]))
    (out / "summary.json").unlink()
    return args


def without_option(argv: list[str], option: str) -> list[str]:
    """argv less `option` and its value (the command line would override the recipe's value)."""
    at = argv.index(option)
    return argv[:at] + argv[at + 2 :]


def file_as(inputs: Inputs, name: str) -> Path:
    return inputs.write(name, "not a directory\n")


YAML_SYNTAX = "task: countdown\nn: [1, 2\nseed: 3\n"
DUPLICATE = "task: countdown\nnum_problems: 3\nn: 2\nn: 4\n"


@dataclass
class Row:
    id: str
    command: str
    argv: Callable[[Inputs], list[str]]
    named: tuple[str, ...]  # every one of these is in the error line
    ours: bool = False


ROWS = [
    Row("probe-truncated-safetensors", "probe", lambda i: i.probe(model=truncated_weights(i, None)),
        ("model.safetensors", "truncated")),
    Row("probe-empty-safetensors", "probe", lambda i: i.probe(model=truncated_weights(i, 0)),
        ("model.safetensors", "empty")),
    Row("train-truncated-safetensors", "train", lambda i: i.train(model=truncated_weights(i, None)),
        ("model.safetensors", "truncated")),
    Row("ppl-truncated-safetensors", "probe",
        lambda i: i.ppl(i.traces({"problem_id": "x", "prompt": "1 2=3:", "trace": "1+2"}),
                        model=truncated_weights(i, None)),
        ("model.safetensors", "truncated")),
    Row("probe-missing-tokenizer-json", "probe", lambda i: i.probe(model=without(i, "tokenizer.json")),
        ("tokenizer.json",)),
    Row("train-missing-tokenizer-json", "train", lambda i: i.train(model=without(i, "tokenizer.json")),
        ("tokenizer.json",)),
    Row("probe-yaml-syntax", "probe", lambda i: i.probe(recipe=i.write("bad.yaml", YAML_SYNTAX)),
        ("bad.yaml", "line 3")),
    Row("train-yaml-syntax", "train", lambda i: i.train(recipe=i.write("bad.yaml", YAML_SYNTAX)),
        ("bad.yaml", "line 3")),
    Row("probe-config-missing", "probe", lambda i: i.probe(recipe=i.tmp / "no_such.yaml"), ("no_such.yaml",)),
    Row("train-config-missing", "train", lambda i: i.train(recipe=i.tmp / "no_such.yaml"),
        ("no_such.yaml",)),
    Row("train-num-problems-many", "train", lambda i: i.train("--train_task", '{"num_problems": "many"}'),
        ("train_task.num_problems", "many")),
    Row("train-num-problems-many-in-recipe", "train",
        lambda i: without_option(i.train(recipe=i.write("r.yaml", "train_task:\n  num_problems: many\n")),
                                 "--train_task"),
        ("train_task.num_problems", "many")),
    Row("compare-summary-a-list", "probe", lambda i: summary_of_wrong_shape(i, [1, 2]), ("summary.json",)),
    Row("compare-summary-config-a-string", "probe",
        lambda i: summary_of_wrong_shape(i, {"task": "countdown", "temperature": 1.0, "top_p": 1.0,
                                             "config": "probe"}),
        ("summary.json", "config")),
    Row("ppl-traces-not-utf8", "probe",
        lambda i: i.ppl(i.write("traces.jsonl", b'{"problem_id": "x", "trace": "\xff\xfe"}\n')),
        ("traces.jsonl", "UTF-8")),
    Row("ppl-problem-id-not-a-string", "probe",
        lambda i: i.ppl(i.traces({"problem_id": 3, "prompt": "1 2=3:", "trace": "1+2"})),
        ("traces.jsonl:1", "problem_id")),
    Row("compare-output-dir-a-file", "probe",
        lambda i: ["compare", *map(str, i.probe_dirs()), "--output_dir", str(file_as(i, "compare"))],
        ("--output_dir", "compare")),
    Row("plot-output-dir-a-file", "probe",
        lambda i: ["plot", str(write_run_dir(i.tmp / "run", {0: PROBLEMS, 2: PROBLEMS})), "--output_dir",
                   str(file_as(i, "plots"))],
        ("--output_dir", "plots")),
    Row("ppl-output-dir-a-file", "probe",
        lambda i: [*i.ppl(i.traces({"problem_id": "x", "prompt": "1 2=3:", "trace": "1+2"})), "--output_dir",
                   str(file_as(i, "ppl-out"))],
        ("output_dir", "ppl-out")),
    Row("train-output-dir-a-file", "train", lambda i: i.train("--output_dir", str(file_as(i, "run-file"))),
        ("output_dir", "run-file")),
    Row("probe-duplicate-key", "probe", lambda i: i.probe(recipe=i.write("dup.yaml", DUPLICATE)),
        ("dup.yaml", "duplicate key", "'n'")),
    Row("train-duplicate-key", "train",
        lambda i: i.train(recipe=i.write("dup.yaml", "max_steps: 2\nseed: 1\nmax_steps: 3\n")),
        ("dup.yaml", "duplicate key", "'max_steps'")),
    Row("build-base-duplicate-key", "build_base",
        lambda i: ["--config", str(i.write("dup.yaml", "seed: 1\nmax_steps: 2\nseed: 2\n")),
                   "--output_dir", str(i.tmp / "base")],
        ("dup.yaml", "duplicate key", "'seed'")),
    # --- ours
    Row("probe-recipe-not-utf8", "probe",
        lambda i: i.probe(recipe=i.write("latin.yaml", b"task: countdown\n# \xe9\n")),
        ("latin.yaml", "UTF-8"), ours=True),
    Row("probe-model-config-torn", "probe",
        lambda i: i.probe(model=spoiled(i, "config.json", b'{"model_type": "qw')),
        ("config.json",), ours=True),
    Row("probe-safetensors-header-garbage", "probe",
        lambda i: i.probe(model=spoiled(i, "model.safetensors", b"\x10" + bytes(7) + b"not json at all!")),
        ("model.safetensors",), ours=True),
    Row("probe-no-weights", "probe", lambda i: i.probe(model=without(i, "model.safetensors")),
        ("model.safetensors",), ours=True),
    Row("probe-dir-config-torn", "probe",
        lambda i: i.probe("--output_dir", str(_torn_probe_dir(i))),
        ("config.json",), ours=True),
    Row("probe-records-corrupt-middle-line", "probe", corrupt_records_line, ("rank-00000.jsonl:2",),
        ours=True),
    Row("ppl-compare-not-a-probe-dir", "probe",
        lambda i: i.ppl(i.traces({"problem_id": "x", "prompt": "1 2=3:", "trace": "1+2"}), "--compare",
                        str(i.tmp), str(i.tmp)),
        ("problems.parquet",), ours=True),
    Row("compare-summary-not-json", "probe", lambda i: _torn_summary(i),
        ("summary.json",), ours=True),
]  # fmt: skip


def _torn_probe_dir(inputs: Inputs) -> Path:
    out = inputs.tmp / "torn-probe"
    (out / "records").mkdir(parents=True)
    (out / "config.json").write_text('{"task": {"task": "countdown"}, "pro')
    return out


def _torn_summary(inputs: Inputs) -> list[str]:
    ref, cand = inputs.probe_dirs()
    (cand / "summary.json").write_text('{"task": "count')
    return ["compare", str(ref), str(cand), "--output_dir", str(inputs.tmp / "compare")]


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_is_one_line_naming_it_and_exit_2(
    row, tiny_random_model, tiny_probe_recipe, tmp_path, capsys
):
    inputs = Inputs(tmp_path, tiny_random_model, tiny_probe_recipe)
    argv = row.argv(inputs)
    capsys.readouterr()  # what building the input printed
    assert COMMANDS[row.command](argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.strip().splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    for name in row.named:
        assert name in errors[0], errors[0]


def test_the_records_before_a_corrupt_line_are_never_cut(tiny_random_model, tiny_probe_recipe, tmp_path):
    inputs = Inputs(tmp_path, tiny_random_model, tiny_probe_recipe)
    args = corrupt_records_line(inputs)
    records = tmp_path / "out" / "records" / "rank-00000.jsonl"
    before = records.read_bytes()
    assert probe_cli(args) == 2
    assert records.read_bytes() == before


def test_ppl_counts_unknown_characters_and_traces_beyond_the_context(
    tiny_random_model, tiny_probe_recipe, tmp_path, caplog
):
    """The tiny model's tokenizer maps a letter to <unk>; its context is 64 positions."""
    inputs = Inputs(tmp_path, tiny_random_model, tiny_probe_recipe)
    traces = inputs.traces(
        {"problem_id": "a", "prompt": "1 2=3:", "trace": "1+2"},
        {"problem_id": "b", "prompt": "1 2=3:", "trace": "1+x+y"},  # two characters outside the alphabet
        {"problem_id": "c", "prompt": "1 2=3:", "trace": "1+2" * 30},  # 6 + 90 tokens > 64
    )
    assert probe_cli(inputs.ppl(traces)) == 0
    summary = json.loads((tmp_path / "ppl" / "ppl_summary.json").read_text())
    assert summary["warnings"] == {
        "traces_with_unknown_tokens": 1,
        "unknown_tokens": 2,
        "traces_beyond_context": 1,
        "context_length": 64,
    }
    assert summary["num_traces"] == 2  # the one beyond the context is not scored
    assert summary["not_scored"] == [{"problem_id": "c", "trace_index": 0, "tokens": 96}]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "1 trace(s) hold 2 token(s) the tokenizer maps to <unk>" in logged
    assert "1 trace(s) longer than the model's context (64 positions)" in logged
