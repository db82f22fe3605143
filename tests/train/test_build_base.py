"""The embedded base model builder: SFT batches, tokenizer round trip, cache, quality (the countdown
solver and SFT examples it trains on are specified in tests/probe/test_countdown_sft.py)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from probe.cli import ConfigError
from probe.tasks import CountdownExample, CountdownTask, countdown_prompt, make_task
from train.build_base import (
    CONFIG_FILE,
    BaseConfig,
    build_tokenizer,
    cli,
    fingerprint,
    learning_rate_at,
    load_task_config,
    main,
    resolve,
    sft_batch,
)


def test_sft_batch_masks_the_prompt_and_ends_the_completion_with_eos():
    tokenizer = build_tokenizer(CountdownTask.alphabet)
    examples = [
        CountdownExample("3 5 7 2=40:", ("(3+5)*(7-2)",), numbers=(3, 5, 7, 2), target=40),
        CountdownExample("2 2=4:", ("2+2",), numbers=(2, 2), target=4),
    ]
    vocab = tokenizer.get_vocab()
    input_ids, attention_mask, labels = sft_batch(
        examples, random.Random(0), 8, vocab, tokenizer.eos_token_id, tokenizer.pad_token_id
    )
    assert input_ids.shape == attention_mask.shape == labels.shape
    for row in range(8):
        length = int(attention_mask[row].sum())
        text = tokenizer.decode(input_ids[row, :length])
        prompt, completion = text.split(":")
        completion_ids = labels[row][labels[row] != -100]
        assert tokenizer.decode(completion_ids) == completion
        assert completion_ids[-1] == tokenizer.eos_token_id
        assert completion.removesuffix("<eos>") in ("(3+5)*(7-2)", "2+2")
        assert (labels[row, length:] == -100).all() and (
            input_ids[row, length:] == tokenizer.pad_token_id
        ).all()
        assert labels[row, : len(prompt) + 1].eq(-100).all()


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = BaseConfig(learning_rate=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert learning_rate_at(0, config) == pytest.approx(1e-4, rel=1e-9)
    assert learning_rate_at(9, config) == pytest.approx(1e-3, rel=1e-9)
    assert learning_rate_at(60, config) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5), rel=1e-9)
    assert learning_rate_at(110, config) == pytest.approx(1e-4, rel=1e-9)


# --- the built directory


def test_base_opens_with_auto_classes_and_identical_token_ids(tiny_base):
    text = countdown_prompt([3, 5, 7, 2], 24) + "(3+5)*(7-2)"
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    reference = build_tokenizer(CountdownTask.alphabet)
    assert tokenizer(text)["input_ids"] == reference(text)["input_ids"]
    assert reference.convert_tokens_to_ids(" ") in tokenizer(text)["input_ids"]  # the space survives
    assert len(tokenizer(text)["input_ids"]) == len(text)  # one token per character
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.padding_side == "left" and tokenizer.pad_token and tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    inputs = tokenizer(["3 5 7=8:", "9 1 2 4=30:"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=12)
    completions = tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert all(c and set(c) <= set("0123456789+-*/() =:") for c in completions)


def test_base_record_names_its_probe_task_and_fingerprint(tiny_base, tiny_probe_recipe):
    record = json.loads((tiny_base / CONFIG_FILE).read_text())
    assert record["finished"] is True and len(record["fingerprint"]) == 16
    assert record["task"]["seed"] == load_task_config(tiny_probe_recipe).seed
    assert record["base"]["probe_recipe"] == str(tiny_probe_recipe)


def test_trained_base_beats_an_untrained_model_at_pass_at_8(
    tiny_base, tiny_random_model, tiny_probe_recipe, tmp_path
):
    from probe.config import ProbeConfig
    from probe.run import probe_model

    task = make_task(load_task_config(tiny_probe_recipe))
    problems = task.problems()
    config = ProbeConfig(n=8, max_new_tokens=16)
    results = {}
    for name, path in (("trained", tiny_base), ("untrained", tiny_random_model)):
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        summary = probe_model(model, tokenizer, task, problems, config, tmp_path / name, progress=False)
        results[name] = summary["metrics"]
    assert results["trained"]["pass@8"] > results["untrained"]["pass@8"]
    assert results["trained"]["pass@8"] >= 0.25
    assert results["trained"]["distinct_correct"] > results["untrained"]["distinct_correct"]


# --- cache and refusals


def test_rerun_with_the_same_config_reuses_the_directory(tiny_base, tiny_base_config, capsys):
    before = (tiny_base / "model.safetensors").stat().st_mtime_ns
    assert main(tiny_base_config) == tiny_base
    assert "reused" in capsys.readouterr().out
    assert (tiny_base / "model.safetensors").stat().st_mtime_ns == before


def _small(output_dir: Path | str, probe_recipe: Path, **changes) -> BaseConfig:
    values = dict(
        num_train_problems=50,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        max_steps=2,
        batch_size=4,
        log_every=0,
    )
    return BaseConfig(output_dir=str(output_dir), probe_recipe=str(probe_recipe), **{**values, **changes})


def test_a_different_config_is_refused_without_overwrite(tmp_path, tiny_probe_recipe):
    output_dir = tmp_path / "base"
    main(_small(output_dir, tiny_probe_recipe))
    before = (output_dir / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="--overwrite"):
        main(_small(output_dir, tiny_probe_recipe, seed=1))
    assert (output_dir / "model.safetensors").read_bytes() == before
    main(_small(output_dir, tiny_probe_recipe, seed=1, overwrite=True))
    assert json.loads((output_dir / CONFIG_FILE).read_text())["base"]["seed"] == 1
    assert (output_dir / "model.safetensors").read_bytes() != before


def test_only_settings_that_decide_the_model_change_the_fingerprint(tiny_probe_recipe):
    task_config = load_task_config(tiny_probe_recipe)
    base = fingerprint(resolve(BaseConfig(), task_config))
    assert fingerprint(resolve(BaseConfig(output_dir="x", log_every=7, num_threads=1), task_config)) == base
    assert fingerprint(resolve(BaseConfig(max_steps=7), task_config)) != base
    assert fingerprint(resolve(BaseConfig(), dataclasses.replace(task_config, seed=5))) != base


def test_a_directory_that_is_not_a_base_model_is_refused(tmp_path, tiny_probe_recipe):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a base model directory"):
        main(_small(tmp_path, tiny_probe_recipe))
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_bad_settings_are_named(tmp_path, tiny_probe_recipe):
    with pytest.raises(ConfigError, match="output_dir"):
        main(_small("", tiny_probe_recipe))
    with pytest.raises(ConfigError, match="probe_recipe"):
        main(_small(tmp_path / "a", tmp_path / "missing.yaml"))
    math_recipe = tmp_path / "math.yaml"
    math_recipe.write_text("task: math\n")
    with pytest.raises(ConfigError, match="countdown"):
        main(_small(tmp_path / "b", math_recipe))


def test_cli_rejects_an_unknown_recipe_key(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("max_steps: 2\nnot_a_field: 1\n")
    assert cli(["--config", str(recipe), "--output_dir", str(tmp_path / "out")]) == 2
    assert "not_a_field" in capsys.readouterr().err


# --- the embedded math base: a data generator writes the probe and RL sets first


def _math_recipe(tmp_path: Path) -> Path:
    recipe = tmp_path / "arith_probe.yaml"
    recipe.write_text(
        f"task: math\ndata_path: {tmp_path / 'data' / 'probe.jsonl'}\nid_column: id\nnum_problems: 0\n"
    )
    return recipe


def test_the_arith_generator_writes_held_out_probe_and_rl_sets_in_the_math_schema(tmp_path):
    from probe.tasks.arith import ArithConfig

    recipe = _math_recipe(tmp_path)
    generator = ArithConfig(arith_probe_problems=30, arith_train_problems=200,
                            arith_train_path=str(tmp_path / "data" / "train.jsonl"))  # fmt: skip
    config = _small(tmp_path / "base", recipe, data_generator="arith")
    main(config, generator)
    probe_rows = [json.loads(line) for line in (tmp_path / "data" / "probe.jsonl").read_text().splitlines()]
    train_rows = [json.loads(line) for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    assert len(probe_rows) == 30 and len(train_rows) == 200
    assert set(probe_rows[0]) == {"id", "problem", "answer"}
    assert not {r["problem"] for r in probe_rows} & {r["problem"] for r in train_rows}
    assert any("\\frac{" in r["answer"] for r in train_rows) and any(
        r["answer"].startswith("-") for r in train_rows
    )
    record = json.loads((tmp_path / "base" / CONFIG_FILE).read_text())
    assert record["generator"]["arith_probe_problems"] == 30 and "arith_train_path" not in record["generator"]
    # the probe set is read back by the math task, as the probe reads it
    task = make_task(load_task_config(recipe, "arith"))
    assert [p.problem_id for p in task.problems()][:2] == ["math/probe-000000", "math/probe-000001"]
    # a rerun keeps identical files; another generator config is refused unless --overwrite
    before = (tmp_path / "data" / "probe.jsonl").stat().st_mtime_ns
    main(config, generator)
    assert (tmp_path / "data" / "probe.jsonl").stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="holds other problems"):
        main(config, dataclasses.replace(generator, arith_max_int=5))
    main(dataclasses.replace(config, overwrite=True), dataclasses.replace(generator, arith_max_int=5))


def test_generator_settings_are_refused_without_a_generator_and_leave_countdown_fingerprints(
    tmp_path, tiny_probe_recipe
):
    from probe.tasks.arith import ArithConfig

    with pytest.raises(ConfigError, match="arith_max_int"):
        main(_small(tmp_path / "a", tiny_probe_recipe), ArithConfig(arith_max_int=3))
    task_config = load_task_config(tiny_probe_recipe)
    assert resolve(BaseConfig(), task_config, ArithConfig(arith_max_int=3)) == resolve(
        BaseConfig(), task_config
    )
    assert "data_generator" not in resolve(BaseConfig(), task_config)["base"]  # countdown: as before
    with pytest.raises(ConfigError, match="task: math and a data_path ending in .jsonl"):
        main(_small(tmp_path / "b", tiny_probe_recipe, data_generator="arith"))
    with pytest.raises(ConfigError, match="not one of"):
        main(_small(tmp_path / "c", _math_recipe(tmp_path), data_generator="algebra"))
