"""The training recipe: TRL's `GRPOConfig` plus what leash adds (task, probes, ProRL, format reward),
parsed together with TRL's own `ModelConfig` (model_name_or_path, dtype, attn_implementation,
model_revision, use_peft and lora_*).

Every default lives here or in TRL's dataclasses; recipes under configs/train/ only set values.
`validate` runs right after parsing, before any model is loaded, and raises `ConfigError` naming what
is wrong; `model_init_kwargs` derives how TRL loads the model (and the reference) from ModelConfig.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from transformers.utils import is_torch_bf16_gpu_available
from trl import GRPOConfig, ModelConfig

from probe.cli import ConfigError, parse
from probe.config import ProbeConfig
from probe.domains import check_domain_name, default_domain
from probe.files import check_output_dir
from probe.models import check_model_dir
from probe.tasks import SuiteConfig, TaskConfig, suite_sections
from probe.tasks.suite import parse_sections, task_section
from train.exploration import ADVANTAGES

# "org/name" with no local dir of that name: a Hugging Face Hub id rather than a missing local dir.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# ModelConfig fields that reach from_pretrained, by the keyword they go there under.
MODEL_INIT_KEYS = {
    "dtype": "dtype",
    "attn_implementation": "attn_implementation",
    "model_revision": "revision",
}
DTYPES = ("auto", "bfloat16", "float16", "float32")
PROBE_BY = ("trainer", "watcher")
# Losses that normalise by the tokens actually kept, so a group masked out of the loss is truly dropped
# (grpo/dr_grpo/sapo/luspo average over rows or a fixed length, so masked rows would dilute the rest).
TOKEN_NORMALISED_LOSSES = ("dapo", "bnpo", "cispo")


@dataclass
class LeashGRPOConfig(GRPOConfig):
    """GRPOConfig + leash's fields; TRL's options (loss_type, epsilon, beta, trust_remote_code, ...) pass
    through. The model's own settings are TRL's ModelConfig, parsed beside it."""

    train_task: dict | str | None = field(
        default_factory=dict,
        metadata={
            "help": "The training problems: keys of probe.tasks.TaskConfig (task, num_problems, seed, ...), "
            "missing keys take TaskConfig's defaults; a JSON object on the command line."
        },
    )
    train_tasks: dict | str | None = field(
        default_factory=dict,
        metadata={
            "help": "A training mixture instead of train_task: {domain: {weight: w, TaskConfig keys...}}. "
            "Each problem carries its domain and is rewarded by its own task; the dataset holds every "
            "domain's problems, repeated or cut to its share w / sum(w) of all rows. A JSON object on "
            "the command line."
        },
    )
    holdout_probe_problems: bool = field(
        default=False,
        metadata={
            "help": "Drop training problems that share an id / countdown key with the probe set (count "
            "logged); false: any such overlap refuses the recipe."
        },
    )
    probe_recipe: str = field(
        default="",
        metadata={"help": "Probe recipe YAML (TaskConfig + ProbeConfig) for in-run probes; empty: off."},
    )
    probe_steps: int = field(
        default=0,
        metadata={"help": "Probe (and checkpoint) every this many optimizer steps; 0: no periodic probe."},
    )
    probe_n: int | None = field(
        default=None,
        metadata={"help": "Samples per problem for in-training probes; None: the probe recipe's n."},
    )
    probe_by: str = field(
        default="trainer",
        metadata={
            "help": "trainer: probes run inside training at each probe step (training waits); watcher: the "
            "trainer only checkpoints (and pins) each probe step and never waits, `python -m probe watch "
            "RUN --config <probe recipe>` probes beside it."
        },
    )
    probe_num_problems: int | None = field(
        default=None,
        metadata={
            "help": "In-training probes use the probe set's first this many problems (all are still held out "
            "of training); None: all."
        },
    )
    probe_at_start: bool = field(
        default=True,
        metadata={"help": "Probe the base model at step 0 (the reference for probe/vs_base/* rates)."},
    )
    probe_at_end: bool = field(
        default=True,
        metadata={"help": "Probe the final model when the last step is not already a probe step."},
    )
    ref_reset_steps: int = field(
        default=0,
        metadata={"help": "ProRL hard reset: copy the policy into the reference every N steps; 0: off."},
    )
    reset_optimizer_on_ref_reset: bool = field(
        default=True,
        metadata={"help": "Also clear the optimizer state (moments, step counts) at each reference reset."},
    )
    dynamic_sampling: bool = field(
        default=False,
        metadata={"help": "Drop groups whose rewards are all equal (no policy gradient) from the loss."},
    )
    dynamic_sampling_max_tries: int = field(
        default=0,
        metadata={"help": "Extra generation rounds per step refilling dropped groups; 0: drop only."},
    )
    advantage: str = field(
        default="grpo",
        metadata={
            "help": "How advantages are formed from the rewards (train/exploration.py). grpo: TRL's own. "
            "pass_at_k: Chen et al. 2025 (arXiv 2508.10751), the analytic advantage of the group's pass@k "
            "reward: rho = 1 - C(N-c,k)/C(N,k), sigma = sqrt(rho(1-rho)), A+ = (1-rho)/sigma for correct "
            "samples, A- = (1 - rho - C(N-c-1,k-1)/C(N-1,k-1))/sigma for wrong ones, 0 for sigma = 0 "
            "(scale_rewards: group divides by sigma, none does not; batch refused). w_reinforce: Zhu et "
            "al. 2025 (arXiv 2506.01347), REINFORCE on +1/-1 with no baseline: A = w_reinforce_lambda for "
            "correct, -1 for wrong (needs scale_rewards: none). Both need a binary correctness reward; "
            "loss_type applies to them unchanged."
        },
    )
    pass_k: int = field(
        default=4,
        metadata={"help": "k of the pass@k advantage (advantage: pass_at_k); 1 <= k <= num_generations."},
    )
    w_reinforce_lambda: float = field(
        default=0.1,
        metadata={"help": "W-REINFORCE weight of positive samples (advantage: w_reinforce); paper: 0.1."},
    )
    unlikeliness_beta: float = field(
        default=0.0,
        metadata={
            "help": "Unlikeliness reward (He et al. 2025, arXiv 2506.02355), 0: off. Each correct sample's "
            "reward is scaled by 1 - beta * rank / G, rank = how many of its group's correct samples have a "
            "lower sequence log-likelihood under the sampling policy (so the most likely is penalised most); "
            "then GRPO's advantage (scale_rewards as set). 0.25 in the paper; in [0, 1]."
        },
    )
    format_reward_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a format reward (1.0 when the answer is in the task's answer format) beside "
            "correctness (weight 1.0), through TRL's reward_weights; 0: off."
        },
    )
    wandb_project: str = field(default="leash", metadata={"help": "W&B project (report_to: wandb)."})
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "HF's option, off here: true replaces a NaN/Inf loss with the running mean before the "
            "NaN guard reads it, so a non-finite loss would never stop the run."
        },
    )

    def __post_init__(self):
        if self.bf16 is None and not self.fp16 and not _bf16_hardware():
            # TRL turns bf16 on when unset; without a bf16 GPU that refuses the recipe, so an unset
            # bf16 means "where the hardware has it" (a recipe for GPUs still parses on CPU).
            self.bf16 = False
        if self.format_reward_weight:
            if self.format_reward_weight < 0:
                raise ConfigError(f"format_reward_weight must be >= 0, got {self.format_reward_weight}")
            if self.reward_weights is not None:
                raise ConfigError(
                    "format_reward_weight and reward_weights both set: format_reward_weight sets "
                    "reward_weights to [1.0, format_reward_weight] (correctness, format)"
                )
            self.reward_weights = [1.0, self.format_reward_weight]
        super().__post_init__()
        self.train_tasks = parse_sections(self.train_tasks, "train_tasks")
        if self.train_task is None:
            self.train_task = {}
        if isinstance(self.train_task, str):  # from the command line
            try:
                self.train_task = json.loads(self.train_task)
            except json.JSONDecodeError as error:
                raise ConfigError(f"train_task: not a JSON object: {self.train_task!r} ({error})") from None
            if not isinstance(self.train_task, dict):
                raise ConfigError(f"train_task: expected a JSON object, got {self.train_task!r}")


def _bf16_hardware() -> bool:
    return is_torch_bf16_gpu_available()


def load_probe_recipe(path: str) -> tuple[dict[str, TaskConfig], ProbeConfig]:
    """({domain: TaskConfig}, ProbeConfig) from a probe recipe YAML (one task section, or a suite)."""
    if not Path(path).is_file():
        raise ConfigError(f"probe_recipe: no such file {path!r}")
    task, suite, probe = parse((TaskConfig, SuiteConfig, ProbeConfig), ["--config", path])
    return suite_sections(task, suite), probe


def load_one_task_probe_recipe(path: str, user: str) -> tuple[TaskConfig, ProbeConfig]:
    """(TaskConfig, ProbeConfig) of a probe recipe with one task section; a suite is refused naming `user`
    (what needs one task)."""
    domains, probe_config = load_probe_recipe(path)
    if len(domains) > 1:
        raise ConfigError(
            f"{user}: needs a probe recipe with one task section; {path} is a suite of {list(domains)}"
        )
    return next(iter(domains.values())), probe_config


def train_task_config(config: LeashGRPOConfig) -> TaskConfig:
    """probe.tasks.TaskConfig from `train_task`; an unknown key, or a value of the wrong type, is named
    (`train_task.num_problems: expected int, got 'many'`)."""
    return task_section(config.train_task, "train_task")


def train_sections(config: LeashGRPOConfig) -> tuple[dict[str, TaskConfig], dict[str, float]]:
    """({domain: TaskConfig}, {domain: weight}) of the training problems: `train_tasks`, or `train_task`
    as one domain named after its task (weight 1)."""
    if not config.train_tasks:
        task_config = train_task_config(config)
        return {default_domain(task_config.task): task_config}, {default_domain(task_config.task): 1.0}
    if config.train_task:
        raise ConfigError("train_task and train_tasks both set: a mixture goes in train_tasks alone")
    sections, weights = {}, {}
    for domain, values in config.train_tasks.items():
        check_domain_name(domain, "train_tasks")
        weight = values.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ConfigError(f"train_tasks.{domain}.weight must be a number > 0, got {weight!r}")
        sections[domain] = task_section(values, f"train_tasks.{domain}", extra_keys=("weight",))
        weights[domain] = float(weight)
    formats = {section.prompt_format for section in sections.values()}
    if len(formats) > 1:
        raise ConfigError(
            f"train_tasks: every domain needs the same prompt_format (TRL takes one prompt kind per "
            f"dataset), got {sorted(formats)}"
        )
    return sections, weights


def check_base_model(name_or_path: str | None) -> None:
    if not name_or_path:
        raise ConfigError("model_name_or_path: not set (a base model dir or a Hub id)")
    if os.path.isdir(name_or_path):
        check_model_dir(name_or_path, "model_name_or_path")  # config, weights and tokenizer files whole
        return
    first = name_or_path.split("/")[0]
    if _HUB_ID.match(name_or_path) and not os.path.exists(first):
        return  # a Hub id: from_pretrained will fetch (or fail with its own message)
    raise ConfigError(
        f"model_name_or_path: base model dir {name_or_path} does not exist "
        "(build the embedded one with `python -m train.build_base --config configs/base/countdown_tiny.yaml "
        f"--output_dir {name_or_path}`)"
    )


# vLLM's default max_logprobs: TRL builds its colocated engine without setting it.
TRL_ENGINE_MAX_LOGPROBS = 20


def check_vllm_probes(config: LeashGRPOConfig, probe_config) -> None:
    """In-training vLLM probes sample through the trainer's colocated engine: refuse what breaks that."""
    where = f"probe_recipe {config.probe_recipe} samples with vLLM"
    if not (config.use_vllm and config.vllm_mode == "colocate"):
        raise ConfigError(
            f"{where}: in-training probes reuse the trainer's colocated engine, so set use_vllm: true and "
            "vllm_mode: colocate (or probe checkpoints out of process with `python -m probe run`)"
        )
    if config.vllm_enable_sleep_mode:
        raise ConfigError(
            f"{where}, and vllm_enable_sleep_mode puts the engine's weights to sleep (discarded) after each "
            "generation: a probe would sample from no weights. Set vllm_enable_sleep_mode: false"
        )
    if config.vllm_tensor_parallel_size > 1:
        raise ConfigError(
            f"{where}, and vllm_tensor_parallel_size = {config.vllm_tensor_parallel_size}: ranks of a tensor-"
            "parallel group must send identical requests, but each rank probes its own problems. Use "
            "vllm_tensor_parallel_size: 1, or probe checkpoints with `python -m probe run`"
        )
    if probe_config.vllm_num_logprobs > TRL_ENGINE_MAX_LOGPROBS:
        raise ConfigError(
            f"{where} with vllm_num_logprobs = {probe_config.vllm_num_logprobs}, above the max_logprobs "
            f"of the trainer's engine ({TRL_ENGINE_MAX_LOGPROBS}, vLLM's default: TRL does not set it)"
        )


def validate(config: LeashGRPOConfig, model_args: ModelConfig) -> None:
    """Refuse a recipe that cannot work, before any model is loaded (overlap is checked in train.data)."""
    check_output_dir(config.output_dir, "output_dir")
    check_base_model(model_args.model_name_or_path)
    if model_args.dtype not in (None, *DTYPES):
        raise ConfigError(f"dtype: {model_args.dtype!r} is not one of {DTYPES}")
    for key, keyword in MODEL_INIT_KEYS.items():
        if keyword in (config.model_init_kwargs or {}):
            raise ConfigError(f"model_init_kwargs.{keyword}: set it as {key} (TRL's ModelConfig) instead")
    train_sections(config)
    if config.ref_reset_steps < 0 or config.probe_steps < 0 or config.dynamic_sampling_max_tries < 0:
        raise ConfigError("ref_reset_steps, probe_steps and dynamic_sampling_max_tries must be >= 0")
    if config.ref_reset_steps and config.beta == 0.0:
        raise ConfigError(
            f"ref_reset_steps={config.ref_reset_steps} while beta=0: without a KL penalty there is no "
            "reference model to reset (set beta > 0 or ref_reset_steps: 0)"
        )
    if config.ref_reset_steps and model_args.use_peft:
        raise ConfigError(
            "ref_reset_steps with use_peft: a LoRA run's reference is the base with the adapter disabled; "
            "a reset would have to merge the adapter into the base weights, after which a checkpoint is no "
            "longer 'adapter + named base'. Refused: train all weights, or set ref_reset_steps: 0"
        )
    if config.sync_ref_model and config.ref_reset_steps:
        raise ConfigError("sync_ref_model and ref_reset_steps both move the reference: choose one")
    if config.dynamic_sampling and config.loss_type not in TOKEN_NORMALISED_LOSSES:
        raise ConfigError(
            f"dynamic_sampling with loss_type={config.loss_type!r}: that loss averages over rows, so masked "
            f"groups would still dilute it; use one of {TOKEN_NORMALISED_LOSSES}"
        )
    if config.dynamic_sampling_max_tries and not config.dynamic_sampling:
        raise ConfigError("dynamic_sampling_max_tries set while dynamic_sampling is false")
    if config.generation_batch_size % config.num_generations != 0:  # TRL checks this too; named here
        raise ConfigError(
            f"generation_batch_size ({config.generation_batch_size}) is not divisible by "
            f"num_generations ({config.num_generations})"
        )
    if config.probe_by not in PROBE_BY:
        raise ConfigError(f"probe_by: {config.probe_by!r} is not one of {PROBE_BY}")
    check_exploration(config)
    if config.probe_steps and not config.probe_recipe:
        raise ConfigError("probe_steps set but probe_recipe is empty")
    if config.probe_recipe:
        _, probe_config = load_probe_recipe(config.probe_recipe)
        if probe_config.backend == "vllm":
            check_vllm_probes(config, probe_config)
        zero3 = config.deepspeed_plugin is not None and config.deepspeed_plugin.zero_stage == 3
        if probe_config.backend == "hf" and zero3 and not config.ds3_gather_for_generation:
            raise ConfigError(
                "ds3_gather_for_generation: false under ZeRO-3 with in-training probes: a probe gathers the "
                "full weights on every rank (as generation does with true), which that setting rules out; "
                "set probe_recipe empty and probe checkpoints out of process (`python -m probe run`)"
            )
    if config.probe_n is not None and config.probe_n < 1:
        raise ConfigError(f"probe_n must be >= 1, got {config.probe_n}")
    if config.probe_num_problems is not None and config.probe_num_problems < 1:
        raise ConfigError(f"probe_num_problems must be >= 1, got {config.probe_num_problems}")


def check_exploration(config: LeashGRPOConfig) -> None:
    """Refuse, by name, exploration options that TRL's settings would silently change or contradict."""
    if config.advantage not in ADVANTAGES:
        raise ConfigError(f"advantage: {config.advantage!r} is not one of {ADVANTAGES}")
    if not 0.0 <= config.unlikeliness_beta <= 1.0:
        raise ConfigError(f"unlikeliness_beta must be in [0, 1], got {config.unlikeliness_beta}")
    options = [name for name, on in (("advantage", config.advantage != "grpo"),
                                     ("unlikeliness_beta", config.unlikeliness_beta > 0)) if on]  # fmt: skip
    if not options:
        return
    named = " and ".join(f"{name}={getattr(config, name)!r}" for name in options)
    if len(options) > 1:
        raise ConfigError(
            f"{named}: the unlikeliness reward reshapes GRPO's rewards, the other advantages need binary "
            "rewards; choose one"
        )
    if config.format_reward_weight or (config.reward_weights and len(config.reward_weights) > 1):
        raise ConfigError(f"{named} needs the binary correctness reward alone; set format_reward_weight: 0")
    if config.multi_objective_aggregation != "sum_then_normalize":
        raise ConfigError(
            f"{named} replaces TRL's sum_then_normalize advantages; "
            f"multi_objective_aggregation={config.multi_objective_aggregation!r} would be ignored"
        )
    if config.advantage == "pass_at_k":
        if not 1 <= config.pass_k <= config.num_generations:
            raise ConfigError(
                f"pass_k={config.pass_k}: the pass@k advantage needs 1 <= k <= num_generations "
                f"({config.num_generations})"
            )
        if config.scale_rewards == "batch":
            raise ConfigError(
                "advantage=pass_at_k with scale_rewards='batch': the pass@k advantage is scaled per group "
                "(by its sigma: scale_rewards: group) or not at all (none)"
            )
    if config.advantage == "w_reinforce":
        if config.w_reinforce_lambda <= 0:
            raise ConfigError(f"w_reinforce_lambda must be > 0, got {config.w_reinforce_lambda}")
        if config.scale_rewards != "none":
            raise ConfigError(
                f"advantage=w_reinforce with scale_rewards={config.scale_rewards!r}: W-REINFORCE uses +1/-1 "
                "rewards with no group baseline and no std scaling; set scale_rewards: none"
            )
    if config.dynamic_sampling and config.advantage != "pass_at_k":
        raise ConfigError(
            f"{named} with dynamic_sampling: uniform-reward groups carry gradient under this option "
            "(W-REINFORCE pushes down all-wrong groups; the unlikeliness reward ranks all-correct ones), "
            "so dropping them changes the method"
        )


def model_init_kwargs(config: LeashGRPOConfig, model_args: ModelConfig) -> dict:
    """GRPOConfig.model_init_kwargs with ModelConfig's dtype, attn_implementation and revision, as
    open-r1 passes them; TRL adds trust_remote_code (GRPOConfig's, off unless a recipe sets it)."""
    ours = {keyword: getattr(model_args, key) for key, keyword in MODEL_INIT_KEYS.items()}
    return {**(config.model_init_kwargs or {}), **ours}
