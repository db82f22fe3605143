"""`accelerate launch -m train --config configs/train/countdown_tiny.yaml [--output_dir RUN] [--beta ...]`

RLVR with TRL's GRPOTrainer on a task's problems, probing its own checkpoints on the step axis.
Restarting the same command resumes from the latest complete RUN/checkpoint-* (train.checkpoints); one
process (or launch) at a time: RUN is locked while it runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import transformers
from accelerate import PartialState
from transformers import AutoTokenizer, set_seed
from trl import ModelConfig, get_peft_config

from probe.cli import ConfigError, RunFailed, parse, run_command
from probe.distributed import barrier
from probe.run import run_lock
from probe.tasks import TaskSuite, make_suite
from train.callbacks import (
    NaNGuardCallback,
    ProbeCallback,
    WatcherScheduleCallback,
    prepare_wandb_env,
    use_leash_wandb_callback,
)
from train.checkpoints import (
    final_from_checkpoint,
    final_is_complete,
    last_complete_checkpoint,
    save_final,
    set_aside_incomplete,
)
from train.config import LeashGRPOConfig, load_probe_recipe, model_init_kwargs, train_sections, validate
from train.data import check_no_overlap, first_problems, mixture, problems_dataset, without_probe_problems
from train.prorl import LeashGRPOTrainer, ReferenceResetCallback
from train.rewards import make_format_reward, make_reward_function

logger = logging.getLogger("train")


def parallelism(trainer) -> str:
    """How the trainer's accelerator runs: "DEEPSPEED, ZeRO-3", "MULTI_CPU", ..."""
    accelerator_state = trainer.accelerator.state
    plugin = accelerator_state.deepspeed_plugin
    kind = accelerator_state.distributed_type.value
    return f"{kind}, ZeRO-{plugin.zero_stage}" if plugin is not None else kind


def checkpoint_step(checkpoint: str | None) -> int:
    if checkpoint is None:
        return 0
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


def main(config: LeashGRPOConfig, model_args: ModelConfig) -> LeashGRPOTrainer | None:
    """Train; returns the trainer (None when a resumed run had no step left to train)."""
    # --- config (every refusal happens here, before a model is loaded)
    validate(config, model_args)
    config.model_init_kwargs = model_init_kwargs(config, model_args)
    train_domains, weights = train_sections(config)
    train_suite = make_suite(train_domains)  # one task per domain; rewards dispatch by domain
    probe_suite = probe_config = None
    if config.probe_recipe:
        probe_domains, probe_config = load_probe_recipe(config.probe_recipe)
        if config.probe_n is not None:
            probe_config = dataclasses.replace(probe_config, n=config.probe_n)
        probe_config = dataclasses.replace(probe_config, rank_timeout=config.ddp_timeout)
        if config.probe_num_problems is not None and len(probe_domains) > 1:
            raise ConfigError(
                f"probe_num_problems: probes the first problems of one task, but the probe recipe is a "
                f"suite of {len(probe_domains)} domains ({', '.join(probe_domains)}); probe it whole (null)"
            )
        probe_suite = make_suite(probe_domains)
    run_dir = Path(config.output_dir)

    # --- seed, logging
    set_seed(config.seed)
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(config.get_process_log_level())
    state = PartialState()

    # --- the run dir is this run's until it ends (rank 0 holds the lock for every rank); what a kill
    # left half-written is set aside, and the run resumes from the last complete checkpoint
    with run_lock(run_dir):
        if state.is_main_process:  # writes RUN/wandb_run_id once; the other ranks read it
            prepare_wandb_env(run_dir, config.wandb_project)
            set_aside_incomplete(run_dir)
        barrier("wandb run id written, incomplete checkpoints set aside", config.ddp_timeout)
        prepare_wandb_env(run_dir, config.wandb_project)
        last = last_complete_checkpoint(run_dir)
        start = checkpoint_step(last)
        if last is not None and 0 < config.max_steps <= start:
            if final_is_complete(run_dir, start):
                logger.warning(
                    "%s is at step %d of max_steps %d: nothing left to do", run_dir, start, config.max_steps
                )
            else:
                logger.warning(
                    "%s: the final model of step %d has no whole final_model.json (the run died while saving "
                    "it, or was written before leash kept that manifest): saved again from %s",
                    run_dir,
                    start,
                    last,
                )
                if state.is_main_process:
                    final_from_checkpoint(Path(last), run_dir, start)
                barrier("final model saved again", config.ddp_timeout)
            return None
        trainer = build_trainer(config, model_args, (train_suite, weights), probe_suite, probe_config)
        logger.info("process %d of %d (%s)", state.process_index, state.num_processes, parallelism(trainer))

        # --- train, resuming from the last complete checkpoint of this run
        if last is not None:
            logger.info("resuming %s from %s (step %d)", run_dir, last, start)
        trainer.train(resume_from_checkpoint=last)
        if trainer.stop_reason:
            raise RunFailed(trainer.stop_reason)
        if trainer.state.global_step == start and start < config.max_steps:
            logger.warning("%s: no training step was left to run (step %d)", run_dir, start)

        # --- save: RUN/.final-partial, then renamed into RUN, then final_model.json
        save_final(trainer, run_dir)
        logger.info("done: %d steps, model saved to %s", trainer.state.global_step, run_dir)
    return trainer


def build_trainer(config, model_args, train, probe_suite, probe_config) -> LeashGRPOTrainer:
    """Data, tokenizer, rewards, the trainer and its callbacks; `train`: (the training TaskSuite, its
    domains' weights)."""
    # --- data
    train_suite, weights = train
    train_problems = train_suite.problems()
    probe_problems = probe_suite.problems() if probe_suite is not None else []
    if config.holdout_probe_problems:
        kept = without_probe_problems(train_problems, probe_problems)
        logger.info(
            "held out %d training problems shared with the probe set", len(train_problems) - len(kept)
        )
        train_problems = kept
    check_no_overlap(train_problems, probe_problems)
    if probe_suite is not None and config.probe_num_problems is not None:  # held out in full, probed in part
        ((domain, task),) = probe_suite.tasks.items()  # one domain (main refuses a suite)
        task.close()
        task, _ = first_problems(task.config, config.probe_num_problems, probe_problems)
        probe_suite = TaskSuite({domain: task})
        probe_problems = probe_suite.problems()
    train_problems = mixture(train_problems, weights)
    chat = next(iter(train_suite.tasks.values())).config.prompt_format == "chat"  # one format for all
    dataset = problems_dataset(train_problems, conversational=chat)

    # --- model (TRL loads it, and the reference, from model_name_or_path with model_init_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=config.trust_remote_code,
    )

    # --- rewards (weights: config.reward_weights, set from format_reward_weight when that is on)
    reward_funcs = [make_reward_function(train_suite)]
    if config.format_reward_weight:
        reward_funcs.append(make_format_reward(train_suite))

    # --- trainer + callbacks
    trainer = LeashGRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    use_leash_wandb_callback(trainer)
    trainer.add_callback(NaNGuardCallback(trainer))
    if config.ref_reset_steps:
        trainer.add_callback(ReferenceResetCallback(trainer))
    if probe_suite is not None and config.probe_by == "watcher":
        trainer.add_callback(WatcherScheduleCallback(trainer, model_args.model_name_or_path))
    elif probe_suite is not None:
        trainer.add_callback(
            ProbeCallback(trainer, probe_suite, probe_problems, probe_config, model_args.model_name_or_path)
        )
    return trainer


def cli(args: Sequence[str] | None = None) -> int:
    """`python -m train` / `leash-train`: the exit status under probe.cli's convention."""
    return run_command("train", lambda: main(*parse((LeashGRPOConfig, ModelConfig), args)))
