"""train.config: the recipe is LeashGRPOConfig beside TRL's ModelConfig; how the model is loaded and
its LoRA adapter come from TRL's own ModelConfig and get_peft_config."""

from __future__ import annotations

from pathlib import Path

import pytest
from trl import ModelConfig, get_peft_config

from probe.cli import ConfigError, parse
from train.config import LeashGRPOConfig, model_init_kwargs, validate

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def _parse(recipe: str, *extra: str, tmp_path: Path):
    return parse(
        (LeashGRPOConfig, ModelConfig),
        ["--config", str(CONFIGS / recipe), "--output_dir", str(tmp_path), *extra],
    )


def test_model_settings_reach_from_pretrained_through_model_init_kwargs(tmp_path):
    config, model_args = _parse(
        "countdown_tiny.yaml", "--dtype", "bfloat16", "--attn_implementation", "eager", tmp_path=tmp_path
    )
    assert model_init_kwargs(config, model_args) == {
        "dtype": "bfloat16",
        "attn_implementation": "eager",
        "revision": "main",
    }
    assert config.trust_remote_code is False  # TRL passes GRPOConfig's own flag; off unless a recipe sets it


def test_a_model_setting_given_twice_is_refused_naming_where_it_belongs(tmp_path, tiny_random_model):
    config, model_args = _parse(
        "countdown_tiny.yaml",
        "--model_name_or_path", str(tiny_random_model),
        "--model_init_kwargs", '{"dtype": "float16"}',
        tmp_path=tmp_path,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="model_init_kwargs.dtype: set it as dtype"):
        validate(config, model_args)
    model_args.dtype = "fp8"
    config.model_init_kwargs = None
    with pytest.raises(ConfigError, match="dtype: 'fp8'"):
        validate(config, model_args)


def test_the_lora_recipe_gives_trls_lora_config(tmp_path):
    _, model_args = _parse("prorl_r1_distill_qwen_1.5b_lora.yaml", tmp_path=tmp_path)
    lora = get_peft_config(model_args)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.task_type) == (64, 128, 0.0, "CAUSAL_LM")
    assert set(lora.target_modules) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    _, full = _parse("prorl_r1_distill_qwen_1.5b.yaml", tmp_path=tmp_path)
    assert get_peft_config(full) is None


def test_probe_by_is_trainer_or_watcher(tmp_path, tiny_random_model):
    config, model_args = _parse(
        "countdown_tiny.yaml", "--model_name_or_path", str(tiny_random_model), "--probe_by", "sidecar",
        tmp_path=tmp_path,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="probe_by: 'sidecar' is not one of"):
        validate(config, model_args)
    config.probe_by = "watcher"
    validate(config, model_args)


@pytest.mark.parametrize(
    "overrides,named",
    [
        ({"advantage": "ppo"}, "advantage: 'ppo' is not one of"),
        ({"advantage": "pass_at_k", "pass_k": 9}, "pass_k=9"),
        ({"advantage": "pass_at_k", "scale_rewards": "batch"}, "scale_rewards='batch'"),
        ({"advantage": "w_reinforce"}, "scale_rewards='group'"),
        (
            {"advantage": "w_reinforce", "scale_rewards": "none", "w_reinforce_lambda": 0.0},
            "w_reinforce_lambda",
        ),
        ({"unlikeliness_beta": 1.5}, "unlikeliness_beta must be in"),
        ({"unlikeliness_beta": 0.25, "advantage": "pass_at_k"}, "choose one"),
        ({"unlikeliness_beta": 0.25, "format_reward_weight": 0.5}, "format_reward_weight: 0"),
        ({"advantage": "pass_at_k", "multi_objective_aggregation": "normalize_then_sum"}, "would be ignored"),
        ({"unlikeliness_beta": 0.25, "dynamic_sampling": True}, "dynamic_sampling"),
        ({"advantage": "w_reinforce", "scale_rewards": "none", "dynamic_sampling": True}, "dynamic_sampling"),
    ],
)
def test_exploration_options_refuse_what_would_change_them_silently(overrides, named, tiny_random_model):
    settings = dict(
        output_dir="unused", use_cpu=True, bf16=False, num_generations=8, per_device_train_batch_size=8
    )
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        config = LeashGRPOConfig(**settings, **overrides)
        validate(config, ModelConfig(model_name_or_path=str(tiny_random_model)))


def test_exploration_options_that_fit_are_accepted(tiny_random_model):
    settings = dict(
        output_dir="unused", use_cpu=True, bf16=False, num_generations=8, per_device_train_batch_size=8
    )
    model_args = ModelConfig(model_name_or_path=str(tiny_random_model))
    for overrides in (
        {"advantage": "pass_at_k", "pass_k": 8, "dynamic_sampling": True},
        {"advantage": "pass_at_k", "scale_rewards": "none"},
        {"advantage": "w_reinforce", "scale_rewards": "none"},
        {"unlikeliness_beta": 0.25, "scale_rewards": "batch"},
    ):
        validate(LeashGRPOConfig(**settings, **overrides), model_args)
