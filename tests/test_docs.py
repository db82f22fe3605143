"""The README and the metric spec copy stay true to the code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_metric_spec_copy_equals_the_shared_spec():
    shared = ROOT.parent / "shared" / "docs" / "metrics.md"
    if not shared.exists():
        pytest.skip("no ../shared/docs/metrics.md beside this checkout")
    assert (ROOT / "docs" / "metrics.md").read_text() == shared.read_text()


def test_readme_tree_names_every_source_file():
    tracked = subprocess.run(
        ["git", "ls-files", "train", "probe", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    readme = (ROOT / "README.md").read_text()
    missing = [
        p
        for p in tracked
        if p.endswith(".py") and Path(p).name != "__init__.py" and Path(p).name not in readme
    ]
    assert not missing, f"README file tree does not mention: {missing}"


def test_readme_quickstart_is_the_two_make_commands():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("```", 2)[1]
    assert "make demo" in quickstart and "make test" in quickstart
    assert "make test" in (ROOT / ".ci" / "run").read_text()
