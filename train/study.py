"""`python -m train.study --config configs/study/edge.yaml [--output_dir STUDY] [--seeds 0 1 2]`

A study runs every entry (a name and recipe overrides) x every seed from one training recipe: the same
base, data, probe and budget for all. Each run probes every `probe_steps` on the probe set's first
`probe_num_problems` problems at `probe_n` samples (cheap points that make its trajectory). At the end,
each run's probe point nearest the largest pass@1 gain every run reaches is probed again at the probe
recipe's own budget on its whole set (n = 1024 on the edge set), and the base once. Everything is
compared at matched pass@1 gain (probe/matched.py), never at equal steps, and written to
STUDY/study.md, study.json and trajectories.png, and logged to W&B as one group per study (each run's
training too).

Resumable run by run: a run whose last checkpoint exists is reused, a killed one resumes from its last
checkpoint (train.grpo.main), finished probe dirs are read, not redone. Runs train one after another in
this process (a process per run would pay ~40 s of imports each on a loaded 2-core machine).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import wandb
import yaml
from trl import ModelConfig

from probe import store
from probe.cli import ConfigError, RunFailed, parse, read_recipe, run_command
from probe.matched import (
    matched,
    nearest_point,
    point_values,
    reference_levels,
    render_markdown,
    seed_summary,
    target,
    trajectory,
    with_rates,
)
from probe.models import load_model
from probe.plots import figure_study, save
from probe.run import RunArguments, probe_model
from probe.run import main as probe_main
from probe.tasks import make_task
from train.callbacks import prepare_wandb_env
from train.checkpoints import final_is_complete
from train.config import LeashGRPOConfig, load_one_task_probe_recipe, validate
from train.data import first_problems
from train.grpo import main as train_main

logger = logging.getLogger("train.study")

RECIPE = "recipe.yaml"  # RUN/recipe.yaml: the exact recipe of the run, written before it starts
# Every run must share these (same base, data, probe and budget); an entry may not override them.
SHARED_KEYS = (
    "model_name_or_path",
    "train_task",
    "holdout_probe_problems",
    "probe_recipe",
    "probe_n",
    "probe_num_problems",
    "probe_steps",
    "probe_at_start",
    "max_steps",
    "output_dir",
    "seed",
)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class StudyConfig:
    """A study: entries x seeds from one training recipe, compared at matched pass@1."""

    output_dir: str = field(default="", metadata={"help": "Study dir: base/, runs/, study.md, study.json."})
    train_recipe: str = field(
        default="", metadata={"help": "Training recipe every run starts from (same base, data, budget)."}
    )
    entries: dict | str | None = field(
        default_factory=dict,
        metadata={
            "help": "name -> recipe overrides (LeashGRPOConfig / ModelConfig keys; {}: the recipe as is), "
            "in run order; a JSON object on the command line."
        },
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds of every entry."})
    reference_entry: str = field(
        default="grpo", metadata={"help": "The plain GRPO entry the target compares every option with."}
    )
    levels: list[float] = field(
        default_factory=list,
        metadata={
            "help": "pass@1 gains over the base to compare at; empty: num_levels evenly spaced up to the "
            "largest gain every run reaches."
        },
    )
    num_levels: int = field(default=3, metadata={"help": "Automatic levels (when `levels` is empty)."})
    num_threads: int = field(
        default=0,
        metadata={"help": "torch CPU threads for the whole study (training and probes); 0: torch's default."},
    )
    train_only: bool = field(
        default=False,
        metadata={
            "help": "Probe the base and train the runs, then stop (no end-of-study probes or comparison): "
            "to spread a study's entries over processes (`--entries` a JSON subset each), then run it whole."
        },
    )
    workers: int = field(
        default=1,
        metadata={
            "help": "Processes sharing the study: this one and workers - 1 children (`python -m train.study` "
            "on the same study dir, logs in STUDY/workers/) train the runs and make the final probes, each "
            "taking what no other holds; this one writes the comparison. num_threads 0: cpus / workers each."
        },
    )
    worker: bool = field(
        default=False,
        metadata={
            "help": "Set on the children of `workers`: train and make final probes, leave study.md, "
            "study.json, the figure and the W&B summary to the parent."
        },
    )
    report_to: str = field(default="wandb", metadata={"help": "wandb (offline without a key) | none."})
    wandb_project: str = field(
        default="leash", metadata={"help": "W&B project; the group is the study name."}
    )

    def __post_init__(self):
        if isinstance(self.entries, str):  # from the command line
            try:
                self.entries = json.loads(self.entries)
            except json.JSONDecodeError as error:
                raise ConfigError(f"entries: not a JSON object: {self.entries!r} ({error})") from None
        self.entries = self.entries or {}


@dataclass
class Run:
    entry: str
    seed: int
    directory: Path
    recipe: dict
    config: LeashGRPOConfig
    model_args: ModelConfig

    @property
    def name(self) -> str:
        return f"{self.entry}/seed-{self.seed}"


# --- config


def check_study(config: StudyConfig) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # set by accelerate launch / torchrun on every rank
        raise ConfigError(
            "a study drives its runs from one process: start it with `python -m train.study`, not a "
            "multi-process launcher (`workers` shares the CPUs between study processes)"
        )
    if not config.output_dir:
        raise ConfigError("StudyConfig.output_dir: required (--output_dir STUDY)")
    if not isinstance(config.entries, dict) or not config.entries:
        raise ConfigError("entries: give at least one entry (name: {recipe overrides})")
    for name, overrides in config.entries.items():
        if not NAME.match(str(name)):
            raise ConfigError(f"entries: {name!r} is not a usable name (letters, digits, _ . -)")
        if not isinstance(overrides, dict):
            raise ConfigError(f"entries.{name}: expected a mapping of recipe keys, got {overrides!r}")
        shared = sorted(set(overrides) & set(SHARED_KEYS))
        if shared:
            raise ConfigError(
                f"entries.{name} overrides {shared}: every run of a study shares the base, data, probe and "
                "budget; set them in the train recipe"
            )
    if config.reference_entry not in config.entries and not config.train_only:
        raise ConfigError(f"reference_entry: {config.reference_entry!r} is not an entry")
    if not config.seeds or len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"seeds: need distinct seeds, got {config.seeds}")
    if any(level <= 0 for level in config.levels) or config.num_levels < 1:
        raise ConfigError("levels must be > 0 (pass@1 gains) and num_levels >= 1")
    if config.num_threads < 0:
        raise ConfigError(f"num_threads must be >= 0, got {config.num_threads}")
    if config.workers < 1 or (config.worker and config.workers != 1):
        raise ConfigError(f"workers must be >= 1 (1 in a worker), got {config.workers}")
    if config.report_to not in ("wandb", "none"):
        raise ConfigError(f"report_to: {config.report_to!r} is not one of ('wandb', 'none')")


def plan_runs(config: StudyConfig) -> list[Run]:
    """Every (entry, seed) with its parsed and validated recipe; refuses before anything is written."""
    base_recipe = read_recipe(config.train_recipe)
    runs = []
    for entry, overrides in config.entries.items():
        for seed in config.seeds:
            directory = store.study_run_dir(config.output_dir, entry, seed)
            recipe = {**base_recipe, **overrides, "seed": seed, "output_dir": str(directory)}
            recipe["run_name"] = f"{Path(config.output_dir).name}/{entry}/seed-{seed}"
            try:
                train_config, model_args = parse_recipe(recipe)
                validate(train_config, model_args)
            except ConfigError as error:
                raise ConfigError(f"entries.{entry} (seed {seed}): {error}") from None
            runs.append(Run(entry, seed, directory, recipe, train_config, model_args))
    first = runs[0].config
    for run in runs:
        if run.config.save_total_limit is not None:
            raise ConfigError(
                f"{run.name}: save_total_limit deletes the checkpoints the study probes at the end"
            )
        if run.config.generation_batch_size != first.generation_batch_size:
            raise ConfigError(
                f"{run.name}: {run.config.generation_batch_size} completions per generation batch, "
                f"{runs[0].name} {first.generation_batch_size}: the same budget means the same samples per "
                "step (keep per_device_train_batch_size; change num_generations alone)"
            )
    if not first.probe_recipe or not first.probe_steps:
        raise ConfigError(
            f"{config.train_recipe}: a study needs probe_recipe and probe_steps (its trajectories)"
        )
    return runs


def parse_recipe(recipe: dict):
    """(LeashGRPOConfig, ModelConfig) of a recipe mapping, through the one recipe parser."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(recipe, handle, sort_keys=False)
    try:
        return parse((LeashGRPOConfig, ModelConfig), ["--config", handle.name])
    finally:
        os.unlink(handle.name)


# --- base probes


def probe_base(run: Run, study_dir: Path) -> tuple[Path, Path]:
    """(trajectory probe dir, final probe dir) of the base model, each probed once per study."""
    config = run.config
    task_config, final_config = load_one_task_probe_recipe(config.probe_recipe, "train.study")
    base = run.model_args.model_name_or_path
    trajectory_dir = store.probe_dir(store.study_base_dir(study_dir), 0)
    if not store.is_finished(trajectory_dir):  # the tasks are built only to probe (a resume reads the dir)
        task = make_task(task_config)
        problems = task.problems()
        task.close()
        point_task, point_problems = first_problems(
            task_config, config.probe_num_problems or len(problems), problems
        )
        point_config = dataclasses.replace(final_config, n=config.probe_n or final_config.n)
        model, tokenizer = load_model(base, point_config.dtype, point_config.device)
        try:  # the very probe the trainer's callback makes at step 0 (same model name, problems, seeds)
            probe_model(
                model,
                tokenizer,
                point_task,
                point_problems,
                point_config,
                trajectory_dir,
                model_name=base,
                progress=False,
            )
        finally:
            point_task.close()
    final_dir = store.final_probe_dir(store.study_base_dir(study_dir), 0)
    if not store.is_finished(final_dir):
        probe_main(  # None: no suite, the recipe's one task
            task_config,
            None,
            final_config,
            RunArguments(model=base, output_dir=str(final_dir), progress=False),
        )
    return trajectory_dir, final_dir


def probe_noise_floor(run: Run, study_dir: Path) -> Path:
    """The base probed again at the final budget with the next sampling seed: compared with the base's own
    final probe, its E, S and NSCR are what sampling alone makes of the support classes, the floor any
    entry's numbers are read against."""
    task_config, final_config = load_one_task_probe_recipe(run.config.probe_recipe, "train.study")
    again = dataclasses.replace(final_config, sampling_seed=final_config.sampling_seed + 1)
    directory = store.study_noise_dir(study_dir, again.sampling_seed)
    if not store.is_finished(directory):
        with exclusive(study_dir / ".noise_floor.lock"):
            if not store.is_finished(directory):
                arguments = RunArguments(
                    model=run.model_args.model_name_or_path, output_dir=str(directory), progress=False
                )
                probe_main(task_config, None, again, arguments)  # None: no suite, the recipe's one task
    return directory


def give_base_probe(run: Run, trajectory_dir: Path) -> None:
    """Copy the base's trajectory probe into the run as its step 0 (whole, or not at all)."""
    target = store.probe_dir(run.directory, 0)
    if store.is_finished(target):
        return
    shutil.rmtree(target, ignore_errors=True)
    partial = target.with_name(f".{target.name}.copy")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(trajectory_dir, partial)
    partial.rename(target)


# --- runs


@contextlib.contextmanager
def run_environment(group: str):
    """One run's environment: train.grpo sets WANDB_DIR, WANDB_RUN_ID, ... with setdefault for its run, so
    every run starts from the study's own environment again; all join the study's W&B group."""
    saved = dict(os.environ)
    os.environ["WANDB_RUN_GROUP"] = group
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def exclusive(lock_path: Path, wait: bool = True):
    """Hold an exclusive lock on `lock_path` (created if missing); yields True once held, or False at once
    when `wait` is off and another process holds it. Study processes sharing a study dir (train_only over
    entry subsets, or two analyses splitting the final probes) wait for each other or skip, never share a
    run or a probe dir."""
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def checkpoint_dir(run: Run, step: int) -> Path:
    return run.directory / f"checkpoint-{step}"  # transformers' Trainer names them so


def is_trained(run: Run) -> bool:
    """The run's final model is saved whole at max_steps (train.checkpoints' manifest). Any other run,
    killed before or while saving it, goes to train.grpo.main, which resumes it from its last complete
    checkpoint or, at max_steps, saves the final model again."""
    return final_is_complete(run.directory, run.config.max_steps)


def train_run(run: Run, trajectory_dir: Path, group: str) -> str:
    """Train one run (or resume it); returns "reused" or "trained"."""
    recipe_path = run.directory / RECIPE
    if recipe_path.is_file():
        old = yaml.safe_load(recipe_path.read_text())
        if old != run.recipe:
            changed = sorted(k for k in set(old) | set(run.recipe) if old.get(k) != run.recipe.get(k))
            raise ConfigError(
                f"{run.directory} holds a run of another recipe (changed: {', '.join(changed)}); "
                "use another output_dir or remove that run dir"
            )
    if is_trained(run):
        return "reused"
    run.directory.mkdir(parents=True, exist_ok=True)
    store.write_atomic(recipe_path, yaml.safe_dump(run.recipe, sort_keys=False).encode())
    give_base_probe(run, trajectory_dir)
    with run_environment(group):
        train_main(run.config, run.model_args)
    return "trained"


# --- the end-of-study probes and the comparison


def final_probes(runs: list[Run], trajectories: dict, level: float | None) -> dict[str, Path]:
    """Probe each run's point nearest `level` (its last point when there is none) at the probe recipe's
    own budget; returns run name -> probe dir. A probe another process is making (a second analysis of the
    same study) is skipped in the first pass and waited for in the second."""
    task_config, final_config = load_one_task_probe_recipe(runs[0].config.probe_recipe, "train.study")
    out = {}
    for run in runs:
        points = trajectories[run.name]
        index = nearest_point(points, level) if level is not None else len(points) - 1
        out[run.name] = (int(points[index]["step"]), points[index]["gain"])
    for wait in (False, True):
        for run in runs:
            step, gain = out[run.name]
            directory = store.final_probe_dir(run.directory, step)
            directory.parent.mkdir(parents=True, exist_ok=True)
            with exclusive(directory.with_name(f".{directory.name}.lock"), wait=wait) as held:
                if not held or store.is_finished(directory):
                    continue
                logger.info("final probe of %s at step %d (gain %.4f)", run.name, step, gain)
                arguments = RunArguments(
                    model=str(checkpoint_dir(run, step)), output_dir=str(directory), progress=False
                )
                probe_main(task_config, None, final_config, arguments)  # None: no suite, one task
    return {run.name: store.final_probe_dir(run.directory, out[run.name][0]) for run in runs}


def per_entry(config: StudyConfig, runs: list[Run], by_run: dict) -> dict[str, list]:
    """entry -> its runs' values of `by_run` (run name -> value), in seed order."""
    return {entry: [by_run[run.name] for run in runs if run.entry == entry] for entry in config.entries}


def trajectories_and_level(
    config: StudyConfig, runs: list[Run], base_points
) -> tuple[dict, dict, float | None]:
    """(run name -> trajectory, entry -> its runs' trajectories, the final probes' pass@1 gain level)."""
    trajectories = {run.name: trajectory(base_points, store.load_run(run.directory)) for run in runs}
    by_entry = per_entry(config, runs, trajectories)
    top = reference_levels(by_entry, config.reference_entry, 1)
    return trajectories, by_entry, (top[0] if top else None)


def analyse(config: StudyConfig, runs: list[Run], base_dirs: tuple[Path, Path]) -> dict:
    """Trajectories, the matched comparison, the end-of-study comparison and the target; study.json."""
    base_points, base_final = store.load_probe(base_dirs[0]), store.load_probe(base_dirs[1])
    trajectories, by_entry, level = trajectories_and_level(config, runs, base_points)
    levels = list(config.levels) or reference_levels(by_entry, config.reference_entry, config.num_levels)
    final_dirs = final_probes(runs, trajectories, level)
    noise_dir = probe_noise_floor(runs[0], Path(config.output_dir))
    base_again = store.load_probe(noise_dir)
    noise = {"sampling_seed": base_again.summary["seed"], **with_rates(point_values(base_final, base_again))}
    final = {}
    for entry, directories in per_entry(config, runs, final_dirs).items():
        per_seed = []
        for directory in directories:
            values = point_values(base_final, store.load_probe(directory))
            values["step"] = float(directory.name.removeprefix(store.STEP_PREFIX))
            per_seed.append(with_rates(values))
        final[entry] = seed_summary(per_seed)
    return {
        "study": Path(config.output_dir).name,
        "entries": {entry: overrides for entry, overrides in config.entries.items()},
        "seeds": list(config.seeds),
        "reference_entry": config.reference_entry,
        "trajectory": {
            "n": base_points.n,
            "problems": len(base_points.records),
            "eps": base_points.summary["metrics"]["eps"],
        },
        "final": {
            "n": base_final.n,
            "problems": len(base_final.records),
            "level": level,
            "base": base_final.summary["metrics"],
            "noise_floor": noise,
            "entries": final,
        },
        "matched": matched(by_entry, levels),
        "target": target(final, config.reference_entry, base_final.n),
        "trajectories": trajectories,
    }


# --- W&B


def log_to_wandb(config: StudyConfig, result: dict, figure: Path) -> None:
    """One summary run in the study's W&B group (offline without a key): the final table and the figure."""
    study_dir = Path(config.output_dir)
    with run_environment(result["study"]):
        prepare_wandb_env(study_dir, config.wandb_project)
        run = wandb.init(group=result["study"], name=f"{result['study']}/summary", job_type="study")
        final_n = result["final"]["n"]
        keys = ["gain", "support_size", f"E@{final_n}", f"S@{final_n}", f"NSCR@{final_n}"]
        table = wandb.Table(columns=["entry", *keys])
        for entry, values in result["final"]["entries"].items():
            table.add_data(entry, *(values.get(k, {}).get("mean") for k in keys))
        noise = result["final"].get("noise_floor")
        if noise:
            table.add_data(
                f"base vs base (sampling seed {noise['sampling_seed']})", *(noise.get(k) for k in keys)
            )
        run.log({"study/final": table, "study/trajectories": wandb.Image(str(figure))})
        run.summary.update(
            {
                f"study/{entry}/{k}": values[k]["mean"]
                for entry, values in result["final"]["entries"].items()
                for k in keys
                if k in values
            }
        )
        run.finish()


# --- worker processes


def start_workers(config: StudyConfig, study_dir: Path) -> list[tuple[subprocess.Popen, Path]]:
    """Start workers - 1 children on the same study (its recipe in STUDY/workers/config.yaml); each trains
    the runs and makes the final probes no other process holds (the locks above), so a run is never
    shared and a child that dies leaves its run to the next process that reaches it."""
    directory = study_dir / "workers"
    directory.mkdir(parents=True, exist_ok=True)
    recipe = {**dataclasses.asdict(config), "workers": 1, "worker": True}
    store.write_atomic(directory / "config.yaml", yaml.safe_dump(recipe, sort_keys=False).encode())
    children = []
    for index in range(1, config.workers):
        log = directory / f"worker-{index}.log"
        with open(log, "ab") as handle:
            command = [sys.executable, "-m", "train.study", "--config", str(directory / "config.yaml")]
            children.append((subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT), log))
    logger.info("started %d worker process(es), logs in %s", len(children), directory)
    return children


def end_workers(children: list[tuple[subprocess.Popen, Path]], stop: bool) -> None:
    """Wait for the children (or stop them, when this process failed: their runs resume next time). A child
    that failed is named with its log; its runs were taken over by this process, which checks each run."""
    for child, log in children:
        if stop and child.poll() is None:
            child.terminate()
        code = child.wait()
        if code != 0 and not stop:
            logger.warning(
                "worker %d exited %d (log: %s); this process checked every run", child.pid, code, log
            )


# --- main


def record_invocation(study_dir: Path, started: float, load_at_start: tuple, config: StudyConfig) -> None:
    """Append this invocation's wall time and the machine's load (1/5/15-minute averages) to
    STUDY/invocations.jsonl: a study resumed over several invocations, or spread over processes, adds up."""
    invocation = {
        "entries": list(config.entries),
        "train_only": config.train_only,
        "seconds": time.perf_counter() - started,
        "load_at_start": load_at_start,
        "load_at_end": os.getloadavg(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    with open(study_dir / "invocations.jsonl", "a") as handle:
        handle.write(json.dumps(invocation) + "\n")


def main(config: StudyConfig) -> dict:
    """Run (or resume) the study and write its comparison; returns study.json's content."""
    # --- config (every entry parsed and validated before anything runs)
    check_study(config)
    runs = plan_runs(config)
    study_dir = Path(config.output_dir)
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s", level=logging.INFO)
    started, load_at_start = time.perf_counter(), os.getloadavg()
    if config.workers > 1 and config.num_threads == 0:
        config.num_threads = max(1, (os.cpu_count() or 1) // config.workers)
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    study_dir.mkdir(parents=True, exist_ok=True)
    children = start_workers(config, study_dir) if config.workers > 1 else []
    finished = False
    try:
        result = run_study(config, runs, study_dir, started, load_at_start)
        finished = True
    finally:
        end_workers(children, stop=not finished)
    if result:
        write_outputs(config, runs, study_dir, result)
    return result


def run_study(config: StudyConfig, runs: list[Run], study_dir: Path, started: float, load_at_start) -> dict:
    """Train every run (and make the final probes) that no other process holds; the comparison unless this
    is a worker or train_only ({} then)."""
    # --- the base, probed once for every run
    with exclusive(study_dir / ".base.lock"):
        base_dirs = probe_base(runs[0], study_dir)

    # --- runs, one after another; a run another process is training is skipped, then waited for
    failed, done = [], set()
    for wait in (False, True):
        for run in (r for r in runs if r.name not in done):
            try:
                run.directory.parent.mkdir(parents=True, exist_ok=True)
                with exclusive(run.directory.with_name(f".{run.directory.name}.lock"), wait=wait) as held:
                    if not held:
                        continue
                    done.add(run.name)
                    status = train_run(run, base_dirs[0], study_dir.name)
            except RunFailed as error:
                failed.append(f"{run.name}: {error}")
                continue
            seconds = time.perf_counter() - started
            logger.info("%s %s (%.0f s into this invocation)", run.name, status, seconds)
    if failed:
        raise RunFailed(f"{len(failed)} run(s) failed, the rest is kept: " + "; ".join(failed))
    if config.train_only:
        record_invocation(study_dir, started, load_at_start, config)
        return {}
    if config.worker:  # the final probes only; the parent compares
        trajectories, _, level = trajectories_and_level(config, runs, store.load_probe(base_dirs[0]))
        final_probes(runs, trajectories, level)
        probe_noise_floor(runs[0], study_dir)
        record_invocation(study_dir, started, load_at_start, config)
        return {}

    # --- end-of-study probes and the comparison
    result = analyse(config, runs, base_dirs)
    record_invocation(study_dir, started, load_at_start, config)
    return result


def write_outputs(config: StudyConfig, runs: list[Run], study_dir: Path, result: dict) -> None:
    """study.json, study.md, trajectories.png and the W&B summary run."""
    store.write_json(study_dir / "study.json", result)
    markdown = render_markdown(result)
    store.write_atomic(study_dir / "study.md", markdown.encode())
    figure = save(
        figure_study(
            per_entry(config, runs, result["trajectories"]),
            result["final"]["entries"],
            result["trajectory"]["n"],
            result["final"]["n"],
            result["final"].get("noise_floor"),
        ),
        study_dir / "trajectories.png",
    )
    if config.report_to == "wandb":
        log_to_wandb(config, result, figure)
    print(markdown)
    print(f"wrote {study_dir / 'study.md'}, study.json and trajectories.png")


def cli(args: Sequence[str] | None = None) -> int:
    """`python -m train.study`: the exit status under probe.cli's convention."""
    return run_command("study", lambda: main(*parse((StudyConfig,), args)))


if __name__ == "__main__":
    sys.exit(cli())
