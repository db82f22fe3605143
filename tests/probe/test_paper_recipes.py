"""The paper's math suite as recipes: each loads through the real path from a small local file in its
data set's real schema (the Hub is out of reach here), and an unreachable data set is refused in one
line naming it and how to pre-download it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from probe.cli import parse
from probe.config import ProbeConfig
from probe.tasks import SuiteConfig, TaskConfig, make_suite, suite_sections

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "configs" / "probe"

# Two rows per data set, every column of its real schema (as its Hub card lists them), with a gold
# answer in the form that data set writes it, and a completion that should be judged correct.
SCHEMAS = {
    "paper_math500.yaml": (
        [
            {"problem": "What is $1+1$?", "solution": "$\\boxed{2}$", "answer": "2", "subject": "Algebra",
             "level": 1, "unique_id": "test/algebra/1.json"},
            {"problem": "Simplify $\\frac{2}{4}$.", "solution": "...", "answer": "\\frac{1}{2}",
             "subject": "Prealgebra", "level": 2, "unique_id": "test/prealgebra/7.json"},
        ],
        ["math/test/algebra/1.json", "math/test/prealgebra/7.json"],
        ["so \\boxed{2}", "\\boxed{0.5}"],
    ),
    "paper_minerva.yaml": (
        [{"question": "Compute $3 \\times 4$.", "answer": "12"},
         {"question": "Give $10^{-2}$.", "answer": "0.01"}],
        ["math/0", "math/1"],
        ["\\boxed{12}", "\\boxed{\\frac{1}{100}}"],
    ),
    "paper_olympiadbench.yaml": (
        [
            {"id": 1606, "subfield": "Algebra", "context": None, "question": "Find $x$ with $2x=1$.",
             "solution": ["$x=\\frac{1}{2}$"], "final_answer": ["$\\frac{1}{2}$"],
             "is_multiple_answer": False, "unit": None, "answer_type": "Numerical", "error": None},
            {"id": 1607, "subfield": "Number Theory", "context": None, "question": "Find $n>0$, $n^2=49$.",
             "solution": ["$n=7$"], "final_answer": ["$7$"], "is_multiple_answer": False, "unit": None,
             "answer_type": "Numerical", "error": None},
        ],
        ["math/1606", "math/1607"],
        ["\\boxed{1/2}", "\\boxed{7}"],
    ),
    "paper_aime24.yaml": (
        [
            {"id": 60, "problem": "Find the answer.", "solution": "... $\\boxed{204}$", "answer": "204",
             "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_1",
             "year": "2024"},
            {"id": 61, "problem": "Find another.", "solution": "...", "answer": "025", "url": "u",
             "year": "2024"},
        ],
        ["math/60", "math/61"],
        ["\\boxed{204}", "\\boxed{25}"],
    ),
    "paper_aime25.yaml": (
        [{"problem": "Find the sum.", "answer": "70", "id": "0"},
         {"problem": "Find the count.", "answer": "588", "id": "1"}],
        ["math/0", "math/1"],
        ["\\boxed{70}", "\\boxed{588}"],
    ),
    "paper_amc23.yaml": (
        [{"id": 0, "question": "How many?", "answer": 27.0, "url": "u"},
         {"id": 1, "question": "What ratio?", "answer": 0.5, "url": "u"}],
        ["math/0", "math/1"],
        ["\\boxed{27}", "\\boxed{\\frac{1}{2}}"],
    ),
}  # fmt: skip


def _parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_each_paper_recipe_loads_its_data_sets_schema_and_judges_its_gold(name, tmp_path):
    rows, ids, completions = SCHEMAS[name]
    data = _parquet(tmp_path / "data.parquet", rows)
    task, suite, probe = parse(
        (TaskConfig, SuiteConfig, ProbeConfig), ["--config", str(PROBE / name), "--data_path", str(data)]
    )
    assert (probe.temperature, probe.top_p) == (0.6, 0.95) and probe.max_new_tokens >= 32768
    assert probe.n == (8192 if "aime" in name or "amc" in name else 1024)
    assert task.dataset_name  # by name, with a local file standing in for it here
    tasks = make_suite(suite_sections(task, suite))
    try:
        problems = tasks.problems()
        assert [p.problem_id for p in problems] == ids
        assert all(p.prompt.endswith("\\boxed{}.") for p in problems)  # chat: the answer-format instruction
        for problem, completion in zip(problems, completions, strict=True):
            verdict = tasks.task_of(problem).judge(problem, "Reasoning... " + completion)
            assert verdict.correct is True, (problem.fields, completion, verdict)
    finally:
        tasks.close()


def test_the_paper_suite_recipe_holds_the_six_data_sets_as_domains(tmp_path):
    recipe = yaml.safe_load((PROBE / "paper_math_suite.yaml").read_text())
    assert list(recipe["suite"]) == ["math500", "minerva", "olympiadbench", "aime24", "aime25", "amc23"]
    for domain in recipe["suite"]:
        name = f"paper_{domain}.yaml"
        single = yaml.safe_load((PROBE / name).read_text())
        section = recipe["suite"][domain]
        assert {k: single[k] for k in section if k != "num_problems"} == {
            k: v for k, v in section.items() if k != "num_problems"
        }  # each section is its single recipe's task section
        section["data_path"] = str(_parquet(tmp_path / f"{domain}.parquet", SCHEMAS[name][0]))
    local = tmp_path / "suite.yaml"
    local.write_text(yaml.safe_dump(recipe, sort_keys=False))
    task, suite, _ = parse((TaskConfig, SuiteConfig, ProbeConfig), ["--config", str(local)])
    tasks = make_suite(suite_sections(task, suite))
    try:
        problems = tasks.problems()
        assert len(problems) == 12 and problems[0].problem_id == "math500/math/test/algebra/1.json"
        assert [p.domain for p in problems][::2] == list(recipe["suite"])
    finally:
        tasks.close()


def test_an_unreachable_data_set_is_refused_in_one_line_naming_it_and_how_to_pre_download(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    # --backend hf: the recipe's vllm is refused first where the vllm package is missing (this venv)
    args = ["run", "--config", str(PROBE / "paper_amc23.yaml"), "--model", str(tmp_path / "model"),
            "--output_dir", str(tmp_path / "out"), "--backend", "hf"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "probe", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("probe run: error:")]
    assert len(errors) == 1
    assert "'math-ai/amc23'" in errors[0] and "split 'test'" in errors[0]
    assert "load_dataset('math-ai/amc23', None, split='test').to_parquet(" in errors[0]
    assert "--data_path" in errors[0]
    assert not (tmp_path / "out").exists()
