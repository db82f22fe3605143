"""scripts/gpu_check.py runs only on a GPU; what can be checked here is that the training command it
launches is a recipe the trainer accepts (a refused key would end the GPU check minutes in)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml
from trl import ModelConfig

from probe.cli import parse
from train.config import LeashGRPOConfig, validate

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_checks_training_command_is_a_valid_recipe(tmp_path, tiny_random_model):
    args = _gpu_check().train_args(tiny_random_model, tmp_path, steps=20)
    assert args[1:3] == ["-m", "train"]
    config, model_args = parse((LeashGRPOConfig, ModelConfig), args[3:])
    validate(config, model_args)
    assert (config.max_steps, config.use_vllm, config.vllm_mode) == (20, True, "colocate")
    probe = yaml.safe_load(Path(config.probe_recipe).read_text())
    assert (probe["backend"], probe["problems_per_call"]) == ("vllm", 200)
