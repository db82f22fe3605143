"""`train/` imports `probe/`; `probe/` never imports `train/` (the probe must run on any checkpoint)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_top_levels(path: Path) -> set[str]:
    """Every top-level package a module imports, at any depth in the file (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_probe_never_imports_train():
    modules = sorted((ROOT / "probe").rglob("*.py"))
    offenders = [str(path.relative_to(ROOT)) for path in modules if "train" in imported_top_levels(path)]
    assert not offenders, f"probe/ modules importing train: {offenders}"


def test_the_check_sees_a_train_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from train.config import LeashGRPOConfig\n    return LeashGRPOConfig\n")
    assert "train" in imported_top_levels(module)
