"""`python -m probe watch RUN --config RECIPE [--every N]`: probe a training run's checkpoints beside it.

The watcher follows RUN (a training output_dir): each complete `RUN/checkpoint-<step>` whose step is a
multiple of `--every` (and the base, as step 0, when the trainer named it in RUN/watch.json) is probed
into `RUN/probes/step-<step>/`, the dir the in-training probe writes, with the same identity (model
named `<output_dir>/checkpoint-<step>`, as the trainer names it), so `probe compare RUN` and
`probe plot RUN` read it unchanged. It runs on its own device (`--device`, another GPU or the CPU),
so training never waits for a probe.

Checkpoint deletion (`save_total_limit`): before a checkpoint is probed, its model files are pinned:
hard-linked (copied across filesystems) into `RUN/probes/.pinned/checkpoint-<step>/`, so the
trainer may delete the checkpoint at any time after that. A trainer in "probe by watcher" mode
(train's `probe_by: watcher`) pins each checkpoint itself right after saving it, before any later
save could rotate it away; the watcher also pins what it finds, between probes and from a thread
while a probe runs. A checkpoint deleted before anyone pinned it is reported (a warning) and skipped.
A pin is removed once its probe dir is finished and logged.

A checkpoint counts once its manifest (`checkpoint_complete.json`, train.checkpoints) is in. One
watcher per run: it holds the lock of RUN/probes/ (probe.files.RunLock; a second one is refused).
Resume after kill -9: a probe dir resumes where it stopped (probe.run), pins survive, the lock is
taken over, W&B resumes the same run id. The watcher stops (exit 0) when RUN/watch.json says
training finished (or, for a run trained without it, the final model's manifest is in) and every
checkpoint due is probed.

W&B: one run per watcher, `<training run id>-probes`, in the same project and in the group named by
the training run's id (train puts its own run in that group), job_type "probe-watch". Its
`probe/*` metrics use `train/global_step` as their x axis (`define_metric`), so they plot on the
training step axis beside the training curves. Not the training run itself: two processes writing
one run id (offline, or online while training) would each hold their own copy of the run, and the
later sync would replace the other's history.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import re
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from probe.cli import ConfigError, parse
from probe.config import ProbeConfig
from probe.domains import domain_keys
from probe.files import RunLock, read_manifest
from probe.metrics import summarize, versus_reference
from probe.store import (
    FINAL_MANIFEST,
    RUN_PROBES,
    is_complete_checkpoint,
    is_finished,
    load_probe,
    probe_dir,
    run_checkpoints,
    write_json,
)
from probe.tasks import TaskConfig, make_task

logger = logging.getLogger(__name__)

WATCH_FILE = "watch.json"  # RUN/watch.json: what a "probe by watcher" trainer tells the watcher
RUN_ID_FILE = "wandb_run_id"  # RUN/wandb_run_id: the training run's W&B id (train.callbacks)
PINNED = ".pinned"  # RUN/probes/.pinned/checkpoint-<step>/: model files kept for the watcher
# checkpoint files a probe does not read (optimizer, scheduler, RNG and scaler state, DeepSpeed shards)
TRAINING_STATE = re.compile(r"^(optimizer|scheduler|scaler|rng_state|training_args|global_step|zero_to_fp32)")


@dataclass
class WatchArguments:
    """What to follow and how often (not part of any probe's identity)."""

    run: str = field(
        default="", metadata={"help": "Training run dir (its output_dir), also the first argument."}
    )
    every: int = field(
        default=1, metadata={"help": "Probe the checkpoints whose step is a multiple of this (1: every one)."}
    )
    poll_seconds: float = field(default=10.0, metadata={"help": "Seconds between looks for new checkpoints."})
    report_to: str = field(
        default="wandb", metadata={"help": "wandb | none: where probe metrics are logged."}
    )
    progress: bool = field(default=False, metadata={"help": "Show a progress bar per probe."})


# --- what the run holds


def pin_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / RUN_PROBES / PINNED / f"checkpoint-{step}"


def pin_checkpoint(run_dir: Path, step: int, checkpoint: Path) -> Path | None:
    """Keep `checkpoint`'s model files under RUN/probes/.pinned/ (hard links; copies across
    filesystems): the pin, or None when the checkpoint vanished first. Built in a temporary dir and
    renamed, so a pin is whole or absent."""
    pin = pin_path(run_dir, step)
    if pin.is_dir():
        return pin
    tmp = pin.with_name(f".{pin.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for source in sorted(checkpoint.iterdir()):
            if not source.is_file() or TRAINING_STATE.match(source.name):
                continue
            try:
                os.link(source, tmp / source.name)
            except OSError:  # another filesystem, or links not allowed: a copy
                shutil.copy2(source, tmp / source.name)
        if not is_complete_checkpoint(checkpoint):
            raise FileNotFoundError(checkpoint)
        tmp.rename(pin)
    except FileNotFoundError:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if pin.is_dir():  # another pinner (the trainer, or our thread) got there first
            return pin
        raise
    return pin


def read_watch_file(run_dir: Path) -> dict:
    path = run_dir / WATCH_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_watch_file(run_dir: Path, content: dict) -> None:
    write_json(run_dir / WATCH_FILE, content)


def run_finished(run_dir: Path) -> bool:
    """RUN/watch.json says so (a "probe by watcher" trainer), else the final model is complete."""
    watch = read_watch_file(run_dir)
    if watch:
        return bool(watch.get("finished"))
    return read_manifest(run_dir, FINAL_MANIFEST) is not None


# --- metrics as the trainer logs them


def probe_metrics(directory: Path, base_directory: Path | None) -> dict[str, float]:
    """`probe/<key>` for every model-level metric and `probe/vs_base/<key>` against the base probe, pooled
    over all problems (the historical keys, also under `probe/overall/`) and per domain
    (`probe/<domain>/<key>`, `probe/<domain>/vs_base/<key>`; probe.domains.domain_keys).

    Undefined rates (None) are left out: no logger takes a null.
    """
    probe = load_probe(directory)
    domains = probe.by_domain
    pooled = summarize(probe.records, probe.zeta)
    per_domain = {d: summarize(records, probe.zeta) for d, records in domains.items()}
    metrics = domain_keys("probe", "", pooled, per_domain)
    if base_directory is not None:
        base = load_probe(base_directory)
        base_domains = base.by_domain
        versus = {d: versus_reference(base_domains.get(d, []), records) for d, records in domains.items()}
        metrics.update(domain_keys("probe", "vs_base", versus_reference(base.records, probe.records), versus))
    return {key: float(value) for key, value in metrics.items() if value is not None}


def wandb_is_offline() -> bool:
    """No API key in the environment or ~/.netrc: W&B writes offline files."""
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError):
        return True


class WandbLog:
    """The watcher's W&B run: `probe/*` on the `train/global_step` axis, in the training run's group."""

    def __init__(self, run_dir: Path, watch: dict):
        # why: wandb is imported only when the watcher reports to it (a slow import)
        import wandb

        id_file = run_dir / RUN_ID_FILE
        if not id_file.is_file():
            raise ConfigError(
                f"{run_dir}: no {RUN_ID_FILE} (the training run's W&B id); use --report_to none"
            )
        train_id = id_file.read_text().strip()
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or watch.get("wandb_project") or "leash",
            id=f"{train_id}-probes",
            group=train_id,
            job_type="probe-watch",
            name=f"{watch.get('run_name') or run_dir.name}-probes",
            dir=os.environ.get("WANDB_DIR") or str(run_dir.resolve()),
            resume="allow",
            mode="offline" if wandb_is_offline() else os.environ.get("WANDB_MODE", "online"),
        )
        self.run.define_metric("train/global_step")
        self.run.define_metric("probe/*", step_metric="train/global_step")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({**metrics, "train/global_step": step})

    def finish(self) -> None:
        self.run.finish()


# --- the watcher


class Watcher:
    def __init__(self, task, problems, config: ProbeConfig, args: WatchArguments):
        self.task, self.problems, self.config, self.args = task, problems, config, args
        self.run_dir = Path(args.run)
        self.state_path = self.run_dir / RUN_PROBES / PINNED / "logged.json"  # steps already logged
        self.missed: set[int] = set()
        self.lock = threading.Lock()

    def due(self, step: int) -> bool:
        return step % self.args.every == 0

    def logged(self) -> set[int]:
        return set(json.loads(self.state_path.read_text())) if self.state_path.is_file() else set()

    def mark_logged(self, step: int) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.state_path, sorted(self.logged() | {step}))

    def pin_new(self) -> None:
        """Pin every due checkpoint not probed yet (also called from the pinning thread)."""
        with self.lock:
            for step, checkpoint in run_checkpoints(self.run_dir):
                if not is_complete_checkpoint(checkpoint):
                    continue  # still being written: its manifest comes last
                if self.due(step) and not is_finished(probe_dir(self.run_dir, step)):
                    if pin_checkpoint(self.run_dir, step, checkpoint) is None and step not in self.missed:
                        self.missed.add(step)
                        logger.warning("%s was deleted before it could be pinned: not probed", checkpoint)

    def todo(self) -> list[tuple[int, str, Path]]:
        """(step, model name in the identity, dir to load) of every due probe not finished yet."""
        watch = read_watch_file(self.run_dir)
        name_prefix = watch.get("run_dir") or str(self.run_dir)
        found: list[tuple[int, str, Path]] = []
        base = watch.get("base_model")
        if base and watch.get("probe_at_start", True) and not is_finished(probe_dir(self.run_dir, 0)):
            found.append((0, base, Path(base)))
        pinned = self.run_dir / RUN_PROBES / PINNED
        for step, _ in run_checkpoints(pinned):
            if self.due(step) and not is_finished(probe_dir(self.run_dir, step)):
                found.append((step, f"{name_prefix}/checkpoint-{step}", pin_path(self.run_dir, step)))
        return found

    def probe(self, step: int, name: str, path: Path) -> None:
        # why: probe.run imports transformers and the samplers (seconds); `probe watch --help` need not
        from probe.models import load_model
        from probe.run import probe_model

        start = time.perf_counter()
        model, tokenizer = load_model(str(path), self.config.dtype, self.config.device)
        probe_model(
            model,
            tokenizer,
            self.task,
            self.problems,
            self.config,
            probe_dir(self.run_dir, step),
            model_name=name,
            progress=self.args.progress,
        )
        logger.info("probed step %d (%s) in %.1f s", step, name, time.perf_counter() - start)

    def log_finished(self, wandb_log: WandbLog | None) -> None:
        """Log every finished probe dir not logged yet, in step order, and drop its pin."""
        logged, finished = self.logged(), self.finished_steps()
        base = probe_dir(self.run_dir, 0)
        for step in sorted(finished - logged):
            if wandb_log is not None:
                directory = probe_dir(self.run_dir, step)
                wandb_log.log(step, probe_metrics(directory, base if is_finished(base) else None))
            self.mark_logged(step)
        for step in finished:  # also a pin the pinning thread made just as its probe finished
            shutil.rmtree(pin_path(self.run_dir, step), ignore_errors=True)

    def finished_steps(self) -> set[int]:
        root = self.run_dir / RUN_PROBES
        steps = set()
        for child in root.glob("step-*"):
            if is_finished(child):
                steps.add(int(child.name.removeprefix("step-")))
        return steps

    def run(self) -> int:
        wandb_log = (
            WandbLog(self.run_dir, read_watch_file(self.run_dir)) if self.args.report_to == "wandb" else None
        )
        stop = threading.Event()
        pinner = threading.Thread(target=self._pin_loop, args=(stop,), daemon=True)
        pinner.start()
        try:
            while True:
                finished = run_finished(self.run_dir)  # read before the last look: nothing saved after it
                self.pin_new()
                for step, name, path in self.todo():
                    self.probe(step, name, path)
                    self.log_finished(wandb_log)
                self.log_finished(wandb_log)
                if finished and not self.todo():
                    break
                time.sleep(self.args.poll_seconds)
        finally:
            stop.set()
            pinner.join()
            if wandb_log is not None:
                wandb_log.finish()
        logger.info("%s: training finished and every due checkpoint is probed", self.run_dir)
        return 0

    def _pin_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.args.poll_seconds):
            try:
                self.pin_new()
            except OSError as error:  # a checkpoint rotated away mid-pin is retried at the next look
                logger.warning("pinning: %s", error)


# --- command


def main(task_config, probe_config: ProbeConfig, args: WatchArguments) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.run:
        raise ConfigError("probe watch: the run dir is required (python -m probe watch RUN --config RECIPE)")
    if not Path(args.run).is_dir():
        raise ConfigError(f"probe watch: {args.run!r} is not a directory")
    if args.every < 1:
        raise ConfigError(f"WatchArguments.every must be >= 1, got {args.every}")
    if args.poll_seconds <= 0:
        raise ConfigError(f"WatchArguments.poll_seconds must be > 0, got {args.poll_seconds}")
    if args.report_to not in ("wandb", "none"):
        raise ConfigError(f"WatchArguments.report_to: {args.report_to!r} is not one of ('wandb', 'none')")
    if probe_config.backend != "hf":
        raise ConfigError("probe watch: backend hf only (a vLLM engine per checkpoint is not wired up)")
    if probe_config.num_threads > 0:
        torch.set_num_threads(probe_config.num_threads)
    task = make_task(task_config)
    try:
        with RunLock(Path(args.run) / RUN_PROBES):  # one watcher per run; a killed one's lock is taken over
            return Watcher(task, task.problems(), probe_config, args).run()
    finally:
        task.close()


def command(argv: Sequence[str]) -> int:
    """`python -m probe watch RUN --config RECIPE [--every N] [--overrides]`."""
    argv = list(argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--run", argv[0], *argv[1:]]
    return main(*parse((TaskConfig, ProbeConfig, WatchArguments), argv))
