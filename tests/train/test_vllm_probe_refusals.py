"""In-training vLLM probes run through TRL's colocated engine: what breaks that is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from trl import ModelConfig

from probe.cli import ConfigError, parse
from train.config import LeashGRPOConfig, validate

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "train" / "countdown_tiny.yaml"


@pytest.fixture
def vllm_probe_recipe(tmp_path) -> Path:
    text = (ROOT / "configs/probe/countdown_tiny.yaml").read_text() + "backend: vllm\n"
    path = tmp_path / "probe_vllm.yaml"
    path.write_text(text)
    return path


def _configs(model, tmp_path, probe_recipe, *extra) -> tuple[LeashGRPOConfig, ModelConfig]:
    args = [
        "--config",
        str(RECIPE),
        "--model_name_or_path",
        str(model),
        "--output_dir",
        str(tmp_path / "run"),
    ]
    return parse((LeashGRPOConfig, ModelConfig), [*args, "--probe_recipe", str(probe_recipe), *extra])


COLOCATE = ("--use_vllm", "true", "--vllm_mode", "colocate")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), "set use_vllm: true and vllm_mode: colocate"),
        ((*COLOCATE, "--vllm_enable_sleep_mode", "true"), "vllm_enable_sleep_mode"),
        ((*COLOCATE, "--vllm_tensor_parallel_size", "2"), "vllm_tensor_parallel_size = 2"),
    ],
    ids=["not-colocated", "sleep-mode", "tensor-parallel"],
)
def test_vllm_probes_with_an_engine_they_cannot_use_are_refused(
    tiny_random_model, tmp_path, vllm_probe_recipe, extra, message
):
    with pytest.raises(ConfigError, match=message):
        validate(*_configs(tiny_random_model, tmp_path, vllm_probe_recipe, *extra))


def test_more_logprobs_than_the_trainers_engine_returns_are_refused(
    tiny_random_model, tmp_path, vllm_probe_recipe
):
    recipe = vllm_probe_recipe.with_name("probe_vllm_40.yaml")
    recipe.write_text(vllm_probe_recipe.read_text() + "vllm_num_logprobs: 40\n")
    with pytest.raises(ConfigError, match="vllm_num_logprobs = 40"):
        validate(*_configs(tiny_random_model, tmp_path, recipe, *COLOCATE))


def test_colocated_vllm_probes_pass_validation(tiny_random_model, tmp_path, vllm_probe_recipe):
    validate(*_configs(tiny_random_model, tmp_path, vllm_probe_recipe, *COLOCATE))
