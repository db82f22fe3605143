"""Training speed against plain TRL, and the probe's share of wall time, as ratios.

    python benchmarks/bench_train.py [--model DIR] [--steps 20] [--run RUN]

1. Time per step of leash's trainer (LeashGRPOTrainer + the NaN guard; probes, dynamic sampling
   and reference resets off) against plain `trl.GRPOTrainer`, same model, data, reward and
   settings (the toy recipe's), alternating A B A B and keeping each one's faster run.
   Target: within 10%.
2. Probe overhead at the demo's schedule (configs/train/countdown_tiny.yaml): one in-training
   probe (probe_n samples on the probe set) is timed on the model, and the share of wall time is
   extrapolated as probes * probe_s / (probes * probe_s + max_steps * step_s). With --run RUN (a
   finished demo run), the measured share from its log is printed too: sum(probe/seconds) / wall.
   Target: <= 10%.
Other CPU-heavy processes slow every figure (ratios less than absolute numbers): the load
average is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer, ModelConfig

from probe.cli import parse, read_recipe
from probe.run import probe_model
from probe.tasks import make_suite, make_task
from train.callbacks import NaNGuardCallback, preserved_rng
from train.config import LeashGRPOConfig, load_probe_recipe, train_task_config
from train.data import problems_dataset, without_probe_problems
from train.prorl import LeashGRPOTrainer
from train.rewards import make_reward_function

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs/train/countdown_tiny.yaml"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(ROOT / "runs/base/countdown_tiny"), help="base model dir")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per trainer run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per trainer (best kept)")
    parser.add_argument("--run", default=None, help="a finished demo RUN dir to read the measured share from")
    return parser.parse_args(argv)


def recipe(model: str, output_dir: str, steps: int):
    config, _ = parse(
        (LeashGRPOConfig, ModelConfig),
        ["--config", str(RECIPE), "--model_name_or_path", model, "--output_dir", output_dir,
         "--max_steps", str(steps), "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1000",
         "--probe_steps", "0", "--no_probe_at_start", "--no_probe_at_end", "--disable_tqdm", "true"],
    )  # fmt: skip
    return config


def seconds_per_step(trainer, steps: int) -> float:
    start = time.perf_counter()
    trainer.train()
    return (time.perf_counter() - start) / steps


def make_trainers(model: str, config, dataset, reward, tokenizer):
    """(leash, plain TRL) trainers on the same model, data, reward and settings."""
    leash = LeashGRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=dataset,
                             processing_class=tokenizer)  # fmt: skip
    leash.add_callback(NaNGuardCallback(leash))
    # generation_batch_size is derived from steps_per_generation at init: pass one of the two
    names = {f.name for f in dataclasses.fields(GRPOConfig) if f.init} - {"generation_batch_size"}
    plain_config = GRPOConfig(**{k: v for k, v in vars(config).items() if k in names})
    plain = GRPOTrainer(model=model, reward_funcs=[reward], args=plain_config, train_dataset=dataset,
                        processing_class=tokenizer)  # fmt: skip
    return leash, plain


def main(argv=None) -> dict:
    args = parse_args(argv)
    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    scratch = Path(tempfile.mkdtemp(prefix="bench_train_"))
    config = recipe(args.model, str(scratch / "out"), args.steps)
    task = make_task(train_task_config(config))
    probe_domains, probe_config = load_probe_recipe(config.probe_recipe)
    probe_suite = make_suite(probe_domains)
    dataset = problems_dataset(without_probe_problems(task.problems(), probe_suite.problems()))
    reward = make_reward_function(task)
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    # --- 1. time per step, leash vs plain TRL (A B A B, best of each)
    times = {"leash": [], "trl": []}
    for _ in range(args.repeats):
        leash, plain = make_trainers(args.model, config, dataset, reward, tokenizer)
        times["leash"].append(seconds_per_step(leash, args.steps))
        times["trl"].append(seconds_per_step(plain, args.steps))
    leash_s, trl_s = min(times["leash"]), min(times["trl"])
    print(
        f"s/step: leash {leash_s:.3f}, plain TRL {trl_s:.3f} -> ratio {leash_s / trl_s:.3f} (target <= 1.10)"
    )

    # --- 2. probe overhead at the demo's schedule (the recipe's probe_n, probe_steps, max_steps)
    demo = read_recipe(str(RECIPE))  # the schedule as the recipe sets it
    demo_steps, probe_steps = int(demo["max_steps"]), int(demo["probe_steps"])
    probe_config = dataclasses.replace(probe_config, n=demo.get("probe_n") or probe_config.n)
    policy = AutoModelForCausalLM.from_pretrained(args.model).eval()
    start = time.perf_counter()
    with preserved_rng(), torch.no_grad():
        probe_model(policy, tokenizer, probe_suite, probe_suite.problems(), probe_config, scratch / "probe",
                    progress=False)  # fmt: skip
    probe_s = time.perf_counter() - start
    probes = len({0, *range(probe_steps, demo_steps + 1, probe_steps), demo_steps})
    share = probes * probe_s / (probes * probe_s + demo_steps * leash_s)
    print(
        f"one probe (n {probe_config.n} x {len(probe_suite.problems())} problems): {probe_s:.1f} s; "
        f"{probes} probes + {demo_steps} steps -> probe share {share:.1%} (extrapolated, target <= 10%)"
    )
    result = {"seconds_per_step": {"leash": leash_s, "trl": trl_s}, "ratio": leash_s / trl_s,
              "probe_seconds": probe_s, "probe_share_extrapolated": share}  # fmt: skip
    if args.run:
        result["probe_share_measured"] = measured_share(Path(args.run))
        print(f"measured in {args.run}: probe share {result['probe_share_measured']:.1%}")
    return result


def measured_share(run_dir: Path) -> float:
    """sum(probe/seconds) / train_runtime of a finished run (RUN/trainer_state.json, written at the end)."""
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    probe_seconds = sum(h["probe/seconds"] for h in history if "probe/seconds" in h)
    (runtime,) = [h["train_runtime"] for h in history if "train_runtime" in h][-1:]
    return probe_seconds / runtime


if __name__ == "__main__":
    main()
