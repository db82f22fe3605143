"""Callbacks on the trainer's step axis: periodic probes, the NaN guard, and W&B (offline by default).

Values reach every `report_to` target through the trainer's own log row at that step
(`LeashGRPOTrainer.pending_logs`), so probe metrics share `train/global_step` with the training
metrics; the step-0 probe is logged at step 0 before the first training step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, TrainerCallback
from transformers.integrations import WandbCallback
from transformers.integrations import deepspeed as hf_deepspeed
from transformers.integrations.integration_utils import rewrite_logs
from trl.models import unwrap_model_for_generation

from probe.distributed import barrier
from probe.files import write_atomic
from probe.plots import plot_run
from probe.run import probe_model
from probe.store import is_finished, probe_dir
from probe.watch import pin_checkpoint, probe_metrics, wandb_is_offline, write_watch_file
from train.checkpoints import last_complete_checkpoint

logger = logging.getLogger(__name__)

OWN_NAMESPACES = ("probe/", "prorl/")  # kept as they are in W&B (HF would prefix "train/")
RUN_ID_FILE = "wandb_run_id"
SUPERSEDED_DIR = "wandb-superseded"  # WANDB_DIR/wandb-superseded/: a resumed run's earlier offline dirs


@contextlib.contextmanager
def preserved_rng():
    """Probing draws random numbers; training (and a resumed run) must not notice."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def is_probe_step(args, state) -> bool:
    """Every probe_steps, plus the last step with probe_at_end."""
    periodic = args.probe_steps > 0 and state.global_step % args.probe_steps == 0
    return periodic or (args.probe_at_end and state.global_step == state.max_steps)


class ProbeCallback(TrainerCallback):
    """Probe at step 0 (the base) and every `probe_steps` (plus the last step); checkpoint at each."""

    def __init__(self, trainer, task, problems, probe_config, base_model: str):
        self.trainer, self.task, self.problems, self.config = trainer, task, problems, probe_config
        self.base_model = base_model
        self.run_dir = Path(trainer.args.output_dir)

    def probe(self, step: int, model, model_name: str) -> dict[str, float]:
        accelerator = self.trainer.accelerator
        start = time.perf_counter()
        out = probe_dir(self.run_dir, step)
        timeout = self.trainer.args.ddp_timeout
        barrier(f"probe step {step}: begin", timeout)  # every rank must agree on whether the dir is finished
        if not is_finished(out):  # a finished dir (resumed run) is read, not redone
            with preserved_rng(), torch.no_grad():  # probe_model leaves the policy's training mode as it was
                probe_model(
                    model,
                    self.trainer.processing_class,
                    self.task,
                    self.problems,
                    self.config,
                    out,
                    model_name=model_name,
                    progress=False,
                )
        barrier(f"probe step {step}: end", timeout)
        base = probe_dir(self.run_dir, 0)
        metrics = probe_metrics(out, base if is_finished(base) else None)
        if accelerator.is_main_process:
            self.refresh_plots()
        metrics["probe/seconds"] = time.perf_counter() - start
        return metrics

    def refresh_plots(self) -> None:
        try:
            plot_run(self.run_dir, self.run_dir / "plots")
        except Exception as error:  # figures are a convenience: never stop a training run for one
            logger.warning("plots not refreshed: %s", error)

    def on_train_begin(self, args, state, control, **kwargs):
        if not args.probe_at_start or is_finished(probe_dir(self.run_dir, 0)):
            return  # probed before this (resumed) run started: W&B and disk already hold it
        if state.global_step == 0:
            with self.policy() as model:
                metrics = self.probe(0, model, self.base_model)
        else:  # resumed, but the base probe never finished: probe the base weights themselves
            metrics = self.probe(0, self.base_weights(), self.base_model)
        self.trainer.pending_logs.update(metrics)
        if state.global_step and self.config.backend == "vllm":  # the engine holds the base: restore
            self.trainer.vllm_generation.sync_weights()
        self.trainer.log({})  # the trainer has no row at step 0 of its own

    def on_step_end(self, args, state, control, **kwargs):
        if not is_probe_step(args, state) or self.trainer.stop_reason:
            return
        control.should_save = True  # the probed weights are kept as RUN/checkpoint-<step>
        control.should_log = True
        name = f"{self.run_dir}/checkpoint-{state.global_step}"
        with self.policy() as model:
            self.trainer.pending_logs.update(self.probe(state.global_step, model, name))

    @contextlib.contextmanager
    def policy(self):
        """The model to sample from: the policy with its full weights, or (vLLM probes) the trainer's
        colocated engine with the current weights pushed into it.

        Under ZeRO-3 every forward gathers parameters collectively, and ranks probing different problems
        run different numbers of forwards: they would deadlock. So every rank gathers the full weights
        once and samples from them with DeepSpeed's hooks off (TRL's own generation does the same);
        elsewhere this is the unwrapped model. Every rank must enter.
        """
        if self.config.backend == "vllm":
            self.trainer.vllm_generation.sync_weights()
            yield self.trainer.vllm_generation.llm
            return
        args = self.trainer.args  # gradient checkpointing is switched off inside and restored as TRL does
        with unwrap_model_for_generation(
            self.trainer.model_wrapped,
            self.trainer.accelerator,
            gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
        ) as model:
            yield model

    def base_weights(self):
        """The base model to probe after a resume: with vLLM, the trainer's engine reloads the base
        checkpoint from disk (no second model in memory; under ZeRO-3 nothing to gather); with HF, the
        base loaded whole on this process (not partitioned, even under ZeRO-3)."""
        if self.config.backend == "vllm":
            llm = self.trainer.vllm_generation.llm
            llm.collective_rpc("reload_weights", kwargs={"weights_path": self.base_model})
            llm.reset_prefix_cache()
            return llm
        with whole_models():
            model = AutoModelForCausalLM.from_pretrained(self.base_model)
        return model.to(self.trainer.accelerator.device)


@contextlib.contextmanager
def whole_models():
    """from_pretrained builds whole models inside: under ZeRO-3 it would build them partitioned
    (deepspeed.zero.Init), with every weight empty outside a DeepSpeed engine."""
    # why: transformers decides through this module-level weak reference (accelerate's
    # zero3_init_context_manager(enable=False) keeps stage 3 in it); saved and put back as it was
    active = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = active


class WatcherScheduleCallback(TrainerCallback):
    """ "Probe by watcher" (`probe_by: watcher`): the trainer probes nothing and never waits; it saves
    a checkpoint at every probe step, pins its model files for `python -m probe watch` right after
    saving it (before a later save could rotate it away under save_total_limit), and tells the
    watcher in RUN/watch.json what the base is and when training has finished."""

    def __init__(self, trainer, base_model: str):
        self.trainer, self.base_model = trainer, base_model
        self.run_dir = Path(trainer.args.output_dir)

    def write(self, args, state, finished: bool) -> None:
        if not state.is_world_process_zero:
            return
        write_watch_file(
            self.run_dir,
            {
                "base_model": self.base_model,
                "run_dir": str(self.run_dir),  # checkpoints are named <run_dir>/checkpoint-<step>
                "run_name": args.run_name,
                "wandb_project": args.wandb_project,
                "probe_at_start": args.probe_at_start,
                "probe_steps": args.probe_steps,
                "finished": finished,
                "step": state.global_step,
            },
        )

    def on_train_begin(self, args, state, control, **kwargs):
        self.write(args, state, finished=False)

    def on_step_end(self, args, state, control, **kwargs):
        if is_probe_step(args, state) and not self.trainer.stop_reason:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        checkpoint = self.run_dir / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and is_probe_step(args, state) and checkpoint.is_dir():
            pin_checkpoint(self.run_dir, state.global_step, checkpoint)

    def on_train_end(self, args, state, control, **kwargs):
        self.write(args, state, finished=True)


class NaNGuardCallback(TrainerCallback):
    """Stop at the first step whose loss or mean reward is not finite on any rank; that step is not saved.

    The decision is all-gathered: a rank that stopped alone would leave the others hanging at their
    next collective.
    """

    KINDS = ("loss", "reward")  # bit 0, bit 1 of each rank's flags

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        # `_tr_loss` sums this rank's losses since the last log row; TRL appends one mean reward (over
        # every rank's completions) per generation.
        loss = float(self.trainer._tr_loss)
        rewards = self.trainer._metrics["train"].get("reward", [])
        flags = int(not math.isfinite(loss)) | int(bool(rewards) and not math.isfinite(rewards[-1])) << 1
        accelerator = self.trainer.accelerator
        every_rank = accelerator.gather(torch.tensor([flags], device=accelerator.device)).tolist()  # (ranks,)
        if not any(every_rank):
            return
        kinds = " and ".join(k for bit, k in enumerate(self.KINDS) if any(f >> bit & 1 for f in every_rank))
        ranks = [rank for rank, f in enumerate(every_rank) if f]
        last = last_complete_checkpoint(Path(args.output_dir))
        self.trainer.stop_reason = (
            f"non-finite {kinds} at step {state.global_step} on rank(s) {ranks}: run stopped, nothing saved "
            f"from this step; last good checkpoint: {last or 'none (the base model)'}"
        )
        control.should_training_stop = True
        control.should_save = False


class LeashWandbCallback(WandbCallback):
    """HF's W&B callback with leash's namespaces left as they are, and the run's figures at the end."""

    SUMMARY_ONLY = (
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "train_loss",
        "total_flos",
    )

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        super().on_train_begin(args, state, control, model=model, **kwargs)
        if (
            state.global_step > 0
            and self._wandb is not None
            and self._initialized
            and state.is_world_process_zero
        ):
            self.continue_offline_run(state)

    def continue_offline_run(self, state) -> None:
        """A resumed offline run: one offline dir per run. W&B starts a new offline dir whose `_step`
        restarts at 0 on every restart, and `wandb sync` uploads a run's dirs one after the other, rows as
        stored: the rows a dead session logged after its last checkpoint would be there twice, and those
        wandb-core had not flushed at a kill -9 not at all. So the history up to the checkpoint is logged
        again from the checkpoint's own trainer_state.json, and the run's earlier offline dirs are moved
        to WANDB_DIR/wandb-superseded/ (kept, no longer synced by `wandb sync RUN/wandb/offline-run-*`)."""
        run = self._wandb.run
        if not run.offline:
            return  # online, the server holds what was streamed; nothing to merge here
        for row in state.log_history:  # the checkpoint's rows, steps 0..global_step, in logging order
            self.log_row({k: v for k, v in row.items() if k != "step"}, row["step"])
        current = Path(run.sync_dir)  # WANDB_DIR/wandb/offline-run-<time>-<id>
        superseded = current.parent.parent / SUPERSEDED_DIR
        earlier = [p for p in sorted(current.parent.glob(f"offline-run-*-{run.id}")) if p != current]
        for path in earlier:
            superseded.mkdir(exist_ok=True)
            path.rename(superseded / path.name)
        logger.info(
            "W&B offline run %s: %d rows up to step %d logged again from the checkpoint; %d earlier offline "
            "dir(s) moved to %s",
            run.id,
            len(state.log_history),
            state.global_step,
            len(earlier),
            superseded,
        )

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if self._wandb is None:
            return
        if not self._initialized:
            self.setup(args, state, model)
        if not state.is_world_process_zero:
            return
        self.log_row(logs, state.global_step)

    def log_row(self, logs: dict, step: int) -> None:
        # why: HF prefixes every key with "train/"; the metric spec names the W&B keys probe/..., prorl/...
        for key in set(self.SUMMARY_ONLY) & set(logs):
            self._wandb.run.summary[key] = logs[key]
        ours = {k: v for k, v in logs.items() if k.startswith(OWN_NAMESPACES)}
        rest = {k: v for k, v in logs.items() if k not in ours and k not in self.SUMMARY_ONLY}
        self._wandb.log({**rewrite_logs(rest), **ours, "train/global_step": step})

    def on_train_end(self, args, state, control, **kwargs):
        super().on_train_end(args, state, control, **kwargs)
        if self._wandb is None or not self._initialized or not state.is_world_process_zero:
            return
        figures = sorted((Path(args.output_dir) / "plots").glob("*.png"))
        if figures:
            images = {f"plots/{path.stem}": self._wandb.Image(str(path)) for path in figures}
            self._wandb.log({**images, "train/global_step": state.global_step})
        self._wandb.finish()


def use_leash_wandb_callback(trainer) -> None:
    """Swap HF's W&B callback (present when report_to holds wandb) for LeashWandbCallback, in place."""
    callbacks = trainer.callback_handler.callbacks
    for index, callback in enumerate(callbacks):
        if type(callback) is WandbCallback:
            callbacks[index] = LeashWandbCallback()


def prepare_wandb_env(run_dir: Path, project: str) -> None:
    """W&B with no key and no network: offline files under RUN; the run id kept in RUN so a resumed
    run continues the same W&B run. Values already in the environment win."""
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file = run_dir / RUN_ID_FILE
    if not id_file.is_file():  # atomic: a kill cannot leave an empty id (a run split across W&B runs)
        write_atomic(id_file, (uuid.uuid4().hex[:8] + "\n").encode())
    os.environ.setdefault("WANDB_DIR", str(run_dir.resolve()))
    os.environ.setdefault("WANDB_PROJECT", project)
    os.environ.setdefault("WANDB_RUN_ID", id_file.read_text().strip())
    os.environ.setdefault("WANDB_RESUME", "allow")
    os.environ.setdefault("WANDB_RUN_GROUP", id_file.read_text().strip())  # `probe watch` logs into it
    if wandb_is_offline():
        os.environ.setdefault("WANDB_MODE", "offline")
