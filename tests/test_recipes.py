"""Every recipe under configs/ parses with the dataclasses of the command that reads it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from probe.cli import ConfigError, parse, read_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _recipes(kind: str) -> list[Path]:
    return sorted((CONFIGS / kind).glob("*.yaml"))


def test_every_recipe_directory_has_recipes():
    for kind in ("accelerate", "base", "probe", "train", "study"):
        assert _recipes(kind), f"configs/{kind}/ holds no recipe"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_recipe_repeats_a_key(path):
    read_recipe(str(path))  # the reader every command uses refuses a repeated key, naming it


@pytest.mark.parametrize("path", _recipes("probe"), ids=lambda p: p.name)
def test_probe_recipe_parses(path):
    from probe.config import ProbeConfig
    from probe.tasks import SuiteConfig, TaskConfig, suite_sections

    task, suite, probe = parse((TaskConfig, SuiteConfig, ProbeConfig), ["--config", str(path)])
    sections = suite_sections(task, suite)
    assert probe.n >= 1 and sections
    for section in sections.values():  # math: num_problems <= 0 keeps every row of the data
        assert section.num_problems >= 1 or section.task == "math"


@pytest.mark.parametrize("path", _recipes("base"), ids=lambda p: p.name)
def test_base_recipe_parses(path):
    from probe.tasks.arith import ArithConfig
    from train.build_base import BaseConfig, load_task_config

    config, _ = parse((BaseConfig, ArithConfig), ["--config", str(path)])
    assert load_task_config(config.probe_recipe, config.data_generator) is not None


@pytest.mark.parametrize("path", _recipes("train"), ids=lambda p: p.name)
def test_train_recipe_parses(path, tmp_path):
    from trl import ModelConfig

    from train.config import LeashGRPOConfig, train_sections

    config, model_args = parse(
        (LeashGRPOConfig, ModelConfig), ["--config", str(path), "--output_dir", str(tmp_path)]
    )
    assert config.num_generations >= 2
    assert model_args.model_name_or_path
    sections, weights = train_sections(config)  # train_task, or a train_tasks mixture by domain
    assert sections and set(weights) == set(sections) and all(w > 0 for w in weights.values())


@pytest.mark.parametrize("path", _recipes("study"), ids=lambda p: p.name)
def test_study_recipe_parses_with_every_entry(path, tmp_path):
    from train.config import check_exploration
    from train.study import StudyConfig, check_study, parse_recipe

    (study,) = parse((StudyConfig,), ["--config", str(path), "--output_dir", str(tmp_path)])
    check_study(study)
    recipe = yaml.safe_load((CONFIGS.parent / study.train_recipe).read_text())
    for overrides in study.entries.values():  # each run's recipe, as the study builds it
        config, _ = parse_recipe({**recipe, **overrides, "output_dir": str(tmp_path)})
        check_exploration(config)


@pytest.mark.parametrize("path", _recipes("accelerate"), ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.distributed_type is not None
    deepspeed = yaml.safe_load(path.read_text()).get("deepspeed_config") or {}
    if "deepspeed_config_file" in deepspeed:  # a DeepSpeed JSON, relative to the repository root
        settings = json.loads((CONFIGS.parent / deepspeed["deepspeed_config_file"]).read_text())
        assert settings["zero_optimization"]["stage"] in (0, 1, 2, 3)
    elif deepspeed:
        assert deepspeed.get("zero_stage") in (0, 1, 2, 3)


def test_unknown_recipe_key_is_named(tmp_path):
    from probe.config import ProbeConfig
    from probe.tasks import TaskConfig

    recipe = tmp_path / "bad.yaml"
    recipe.write_text("n: 4\nnot_a_field: 1\n")
    with pytest.raises(ConfigError, match="not_a_field"):
        parse((TaskConfig, ProbeConfig), ["--config", str(recipe)])


def test_wrong_type_in_recipe_is_named(tmp_path):
    from probe.config import ProbeConfig
    from probe.tasks import TaskConfig

    recipe = tmp_path / "bad.yaml"
    recipe.write_text("n: 1.5\n")
    with pytest.raises(ConfigError, match=r"ProbeConfig\.n"):
        parse((TaskConfig, ProbeConfig), ["--config", str(recipe)])


def test_ppl_reads_a_probe_recipe_task_section_and_skips_its_sampling_section():
    import dataclasses

    from probe.config import ProbeConfig
    from probe.ppl import PplArguments
    from probe.tasks import TaskConfig

    sampling = {field.name for field in dataclasses.fields(ProbeConfig)}
    recipe = CONFIGS / "probe" / "countdown_tiny.yaml"
    task, ppl = parse(
        (TaskConfig, PplArguments), ["--config", str(recipe), "--batch_size", "3"], recipe_ignores=sampling
    )
    assert task.seed == yaml.safe_load(recipe.read_text())["seed"]
    assert ppl.batch_size == 3  # from the command line, not the recipe's sampling batch_size


def test_ignored_recipe_keys_do_not_hide_unknown_ones(tmp_path):
    from probe.ppl import PplArguments
    from probe.tasks import TaskConfig

    recipe = tmp_path / "bad.yaml"
    recipe.write_text("n: 4\nnot_a_field: 1\n")
    with pytest.raises(ConfigError, match="not_a_field"):
        parse((TaskConfig, PplArguments), ["--config", str(recipe)], recipe_ignores={"n"})
