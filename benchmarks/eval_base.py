"""Quality of a built base model on its probe set: pass@1, pass@n, distinct correct per problem.

`python benchmarks/eval_base.py DIR [--probe_recipe configs/probe/countdown_tiny.yaml] [--n 64]`
A quick check with plain `generate`; the full measurement is `python -m probe run`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from probe.tasks import make_task
from train.base import evaluate_base, load_task_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--probe_recipe", default="configs/probe/countdown_tiny.yaml")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--num_problems", type=int, default=0, help="0 = every problem of the recipe")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    task_config = load_task_config(args.probe_recipe)
    task = make_task(task_config)
    problems = task.problems()[: args.num_problems or None]
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir).eval()
    started = time.perf_counter()
    metrics = evaluate_base(
        model, tokenizer, task, problems, n=args.n, temperature=args.temperature, seed=args.seed
    )
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    metrics["parameters"] = model.num_parameters()
    metrics["load_average_1min"] = os.getloadavg()[0]
    metrics["torch_threads"] = torch.get_num_threads()
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
