"""Probe speed and memory, as ratios against baselines run beside it on the same model.

    python benchmarks/bench_probe.py [--model DIR] [--num_problems 50] [--n 1024]

Measures, on the embedded base model (built with `python -m train.build_base` into --model if absent):
- probe throughput: finished samples/s of `probe_model` (sampling with the shared prompt cache,
  token entropy, verification, gzip shards, records), against
  (a) a per-problem loop of `model.generate(num_return_sequences=n, output_scores=True)` and
  (b) a bare batched sampling loop with the probe's sampling scheme (prompt prefilled once, one
      forward row per distinct prefix) and no entropy, text, verification or storage, and
  (c) the same bare loop with one forward row per sample (the prompt cache repeated over rows);
  targets: >= 3x (a), within 1.5x of (b);
- samples per verification call (judge_many call) and per verified answer at this n;
- several problems per forward: `probe_model` with `problems_per_call` = --per_call against 1 (the
  one-problem sampler), alternating, best of --repeats each, at n = 32 (on --per_call_problems
  problems) and n = --n (on 20); targets: >= 3x at n = 32, no slower at n = --n;
- peak RSS of `python -m probe run` at n = 8192 on 20 problems, next to n = 1024 on the same 20
  (memory should grow with distinct answers, not samples).
All timings use the same torch thread count; another CPU-heavy process running at the same time
slows every figure (ratios less than absolute numbers): the load average is printed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from probe.cli import parse
from probe.config import ProbeConfig
from probe.models import encode_prompt, load_model
from probe.run import probe_model
from probe.sampling import forward_with_cache
from probe.tasks import TaskConfig, make_task

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs/probe/countdown_tiny.yaml"
BASE_RECIPE = ROOT / "configs/base/countdown_tiny.yaml"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "runs/base/countdown_tiny"), help="base model dir")
    parser.add_argument("--num_problems", type=int, default=50)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument(
        "--batch_size", type=int, default=1024, help="samples decoded together (ours and (b))"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every measurement")
    parser.add_argument("--rss_n", type=int, default=8192)
    parser.add_argument("--rss_problems", type=int, default=20)
    parser.add_argument("--skip_rss", action="store_true")
    parser.add_argument("--per_call", type=int, default=50, help="problems per sampler call vs 1")
    parser.add_argument("--per_call_problems", type=int, default=100, help="problems for the n = 32 ratio")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each per-call setting (best kept)")
    return parser.parse_args(argv)


# --- baselines


@torch.inference_mode()
def generate_loop(model, tokenizer, prompts, n, settings) -> int:
    """(a): one `generate` call per problem, n return sequences, scores kept; returns samples."""
    samples = 0
    for prompt_ids in prompts:
        out = model.generate(
            input_ids=torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            do_sample=True,
            num_return_sequences=n,
            max_new_tokens=settings["max_new_tokens"],
            temperature=settings["temperature"],
            top_p=settings["top_p"],
            top_k=0,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        samples += len(tokenizer.batch_decode(out.sequences[:, len(prompt_ids) :], skip_special_tokens=True))
    return samples


@torch.inference_mode()
def bare_loop(model, tokenizer, prompts, n, batch_size, settings, share_prefixes: bool) -> int:
    """(b) with share_prefixes: the probe's own sampling scheme (prompt prefilled once, one forward
    row per distinct prefix) and nothing else: no entropy, text, verification or storage.
    (c) without: the prompt cache repeated over the rows, one forward row per sample."""
    eos = torch.tensor([tokenizer.eos_token_id])
    samples = 0
    for seed, prompt_ids in enumerate(prompts):
        generator = torch.Generator().manual_seed(seed)
        prompt_cache, prompt_logits = forward_with_cache(
            model, torch.tensor([prompt_ids]), None, logits_to_keep=1
        )
        for start in range(0, n, batch_size):
            rows = min(batch_size, n - start)
            cache, logits = copy.deepcopy(prompt_cache), prompt_logits
            row_state = torch.zeros(rows, dtype=torch.long)  # (rows,) -> cache row
            if not share_prefixes:
                cache.batch_repeat_interleave(rows)
                logits, row_state = logits.expand(rows, -1), torch.arange(rows)
            for step in range(settings["max_new_tokens"]):
                probs = torch.softmax(logits.float() / settings["temperature"], dim=-1)[row_state]
                tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]
                running = ~torch.isin(tokens, eos)
                if not running.any() or step == settings["max_new_tokens"] - 1:
                    break
                row_state, tokens = row_state[running], tokens[running]
                if share_prefixes:
                    children, row_state = torch.unique(
                        row_state * logits.shape[-1] + tokens, return_inverse=True
                    )
                    parents, tokens = children // logits.shape[-1], children % logits.shape[-1]
                else:
                    parents, row_state = row_state, torch.arange(len(tokens))
                cache.batch_select_indices(parents)
                cache, logits = forward_with_cache(model, tokens[:, None], cache)
            samples += rows
    return samples


# --- measurements


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def ensure_model(path: Path) -> Path:
    if (path / "config.json").exists():
        return path
    print(
        f"building the embedded base model into {path} (python -m train.build_base, a few minutes)",
        flush=True,
    )
    command = [
        sys.executable,
        "-m",
        "train.build_base",
        "--config",
        str(BASE_RECIPE),
        "--output_dir",
        str(path),
    ]
    subprocess.run(command, cwd=ROOT, check=True)
    return path


def probe_child(
    model: Path, n: int, num_problems: int, batch_size: int, threads: int, *extra: str
) -> tuple[float, float, dict]:
    """(peak RSS in MB, seconds, summary.json) of one `python -m probe run` in a fresh child process."""
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-c",
            RSS_CHILD,
            str(RECIPE),
            str(model),
            out,
            str(n),
            str(num_problems),
            str(batch_size),
            str(threads),
            *extra,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"probe run failed:\n{done.stderr[-2000:]}")
        seconds = time.perf_counter() - start
        summary = json.loads((Path(out) / "summary.json").read_text())
        return float(done.stdout.strip().splitlines()[-1]), seconds, summary


# Runs the probe command in-process, then prints its own peak RSS (ru_maxrss is KB on Linux).
RSS_CHILD = """
import resource, sys
from probe.__main__ import cli
recipe, model, out, n, problems, batch, threads, *extra = sys.argv[1:]
code = cli(["run", "--config", recipe, "--model", model, "--output_dir", out, "--n", n,
            "--num_problems", problems, "--batch_size", batch, "--num_threads", threads,
            "--progress", "false", *extra])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
sys.exit(code)
"""


def per_call_ratio(model, tokenizer, task, problems, probe_config, per_call: int, repeats: int) -> dict:
    """samples/s of probe_model with `per_call` problems per sampler call and with 1, the two
    alternating (A B A B) so that a change in load hits both; best of `repeats` each."""
    rates: dict[int, list[float]] = {1: [], per_call: []}
    for _ in range(repeats):
        for setting in rates:
            config = dataclasses.replace(probe_config, problems_per_call=setting)
            with tempfile.TemporaryDirectory() as out:
                run = functools.partial(probe_model, progress=False)
                _, seconds = timed(run, model, tokenizer, task, problems, config, out)
            rates[setting].append(probe_config.n * len(problems) / seconds)
    one, many = max(rates[1]), max(rates[per_call])
    return {"one_per_call_samples_per_s": one, "many_per_call_samples_per_s": many, "ratio": many / one}


def main(argv=None) -> dict:
    # --- config
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    task_config, probe_config = parse(
        (TaskConfig, ProbeConfig),
        [
            "--config",
            str(RECIPE),
            "--num_problems",
            str(args.num_problems),
            "--n",
            str(args.n),
            "--batch_size",
            str(args.batch_size),
        ],
    )
    print(f"load average before: {os.getloadavg()}  (2 cores here; other jobs slow every figure)")
    # --- model and problems
    model_dir = ensure_model(Path(args.model))
    model, tokenizer = load_model(str(model_dir), probe_config.dtype, probe_config.device)
    task = make_task(task_config)
    problems = task.problems()
    prompts = [encode_prompt(tokenizer, p.prompt, task_config.prompt_format) for p in problems]
    settings = dict(
        max_new_tokens=probe_config.max_new_tokens, temperature=probe_config.temperature, top_p=1.0
    )
    total = args.n * len(problems)
    print(
        f"model {model_dir}, {len(problems)} problems x n = {args.n}, "
        f"batch {args.batch_size}, {args.threads} thread(s)"
    )
    # --- (b) bare loop, ours, (a) generate
    samples_b, seconds_b = timed(
        bare_loop, model, tokenizer, prompts, args.n, args.batch_size, settings, True
    )
    samples_c, seconds_c = timed(
        bare_loop, model, tokenizer, prompts, args.n, args.batch_size, settings, False
    )
    assert samples_b == samples_c == total
    with tempfile.TemporaryDirectory() as out:
        summary, seconds_ours = timed(
            lambda: probe_model(
                model, tokenizer, task, problems, probe_config, out, model_name=str(model_dir), progress=False
            )
        )
    samples_a, seconds_a = timed(generate_loop, model, tokenizer, prompts, args.n, settings)
    assert samples_a == total
    task.close()
    ours, rate_a, rate_b, rate_c = (total / t for t in (seconds_ours, seconds_a, seconds_b, seconds_c))
    results = {
        "ours_samples_per_s": ours,
        "generate_samples_per_s": rate_a,
        "bare_samples_per_s": rate_b,
        "bare_one_row_per_sample_samples_per_s": rate_c,
        "speedup_vs_generate": ours / rate_a,
        "slowdown_vs_bare": rate_b / ours,
        "samples_per_verification_call": summary["samples_per_verification_call"],
        "samples_per_verified_answer": total / summary["verified_answers"],
        "pass@1": summary["metrics"]["pass@1"],
        f"pass@{args.n}": summary["metrics"][f"pass@{args.n}"],
    }
    print(f"ours (probe_model, all included)    {ours:8.0f} samples/s  ({seconds_ours:.1f} s)")
    print(f"(a) generate per problem            {rate_a:8.0f} samples/s  ({seconds_a:.1f} s)")
    print(f"(b) bare loop, same prefix sharing  {rate_b:8.0f} samples/s  ({seconds_b:.1f} s)")
    print(f"(c) bare loop, one row per sample   {rate_c:8.0f} samples/s  ({seconds_c:.1f} s)")
    print(f"ours / (a) = {ours / rate_a:.2f}x   (target >= 3x)")
    print(f"(b) / ours = {rate_b / ours:.2f}x   (target <= 1.5x)")
    print(f"ours / (c) = {ours / rate_c:.2f}x")
    print(
        f"verification: {summary['verification_calls']} judge_many calls, "
        f"{summary['verified_answers']} verified answers "
        f"-> {results['samples_per_verification_call']:.0f} samples per call, "
        f"{results['samples_per_verified_answer']:.1f} samples per verified answer"
    )
    print(f"pass@1 {results['pass@1']:.3f}, pass@{args.n} {results[f'pass@{args.n}']:.3f}")
    # --- several problems per forward against one, at a small and at the large n
    for n, count in ((32, args.per_call_problems), (args.n, 20)):
        ratio_task = make_task(dataclasses.replace(task_config, num_problems=count))
        ratio = per_call_ratio(
            model,
            tokenizer,
            ratio_task,
            ratio_task.problems(),
            dataclasses.replace(probe_config, n=n),
            args.per_call,
            args.repeats,
        )
        ratio_task.close()
        results[f"per_call_n{n}"] = ratio
        target = ">= 3x" if n == 32 else ">= 1x"
        print(
            f"n = {n:5d} x {count} problems: {args.per_call} per call "
            f"{ratio['many_per_call_samples_per_s']:7.0f} samples/s, "
            f"1 per call {ratio['one_per_call_samples_per_s']:7.0f} -> "
            f"{ratio['ratio']:.2f}x (target {target})"
        )
    # --- memory
    if not args.skip_rss:
        for n in (1024, args.rss_n):
            rss, seconds, _ = probe_child(model_dir, n, args.rss_problems, args.batch_size, args.threads)
            results[f"peak_rss_mb_n{n}"] = rss
            print(f"peak RSS, n = {n:5d} x {args.rss_problems} problems: {rss:7.1f} MB  ({seconds:.0f} s)")
    print(f"load average after: {os.getloadavg()}")
    return results


if __name__ == "__main__":
    main()
