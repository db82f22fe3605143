"""Shared fixtures: a small SFT-trained base model and an untrained one with the same tokenizer.

Both are built once per test session into a temporary directory by the real builder
(`train.build_base.main`), from a small setting that trains in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Easier than the shipped probe set (3 numbers, small targets) so a tiny model learns it fast.
TINY_PROBE_RECIPE = """\
task: countdown
prompt_format: compact
seed: 99
num_problems: 24
min_numbers: 3
max_numbers: 3
min_value: 1
max_value: 9
min_target: 1
max_target: 30
"""

TINY_BASE = {
    "seed": 0,
    "num_train_problems": 3000,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 256,
    "max_position_embeddings": 64,
    "max_steps": 150,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "warmup_steps": 15,
    "log_every": 0,
}

# The same base with head_dim 32 (64 / 2 heads): vLLM's CPU attention refuses head_dim 16.
TINY_BASE_VLLM = TINY_BASE | {"num_attention_heads": 2, "num_key_value_heads": 1}


@pytest.fixture(scope="session")
def tiny_probe_recipe(tmp_path_factory) -> Path:
    """A probe recipe (task section only) whose problems `tiny_base` holds out of its SFT."""
    path = tmp_path_factory.mktemp("recipes") / "tiny_probe.yaml"
    path.write_text(TINY_PROBE_RECIPE)
    return path


@pytest.fixture(scope="session")
def tiny_base_config(tmp_path_factory, tiny_probe_recipe):
    """The BaseConfig `tiny_base` is built from (rebuilding with it reuses the directory)."""
    from train.build_base import BaseConfig

    output_dir = tmp_path_factory.mktemp("tiny_base") / "model"
    return BaseConfig(output_dir=str(output_dir), probe_recipe=str(tiny_probe_recipe), **TINY_BASE)


@pytest.fixture(scope="session")
def tiny_base(tiny_base_config) -> Path:
    """Directory of a small SFT-trained base model (loads with AutoModelForCausalLM/AutoTokenizer)."""
    from train.build_base import main

    return main(tiny_base_config)


@pytest.fixture(scope="session")
def tiny_base_vllm(tmp_path_factory, tiny_probe_recipe) -> Path:
    """`tiny_base` built with head_dim 32, which vLLM's CPU backend accepts (same builder, same SFT)."""
    from train.build_base import BaseConfig, main

    output_dir = tmp_path_factory.mktemp("tiny_base_vllm") / "model"
    return main(BaseConfig(output_dir=str(output_dir), probe_recipe=str(tiny_probe_recipe), **TINY_BASE_VLLM))


@pytest.fixture(scope="session")
def tiny_random_model(tmp_path_factory) -> Path:
    """Directory of an untrained model of `tiny_base`'s shape with the same tokenizer."""
    import torch

    from probe.tasks import CountdownTask
    from train.build_base import BaseConfig, build_model, build_tokenizer

    output_dir = tmp_path_factory.mktemp("tiny_random_model")
    torch.manual_seed(0)
    tokenizer = build_tokenizer(CountdownTask.alphabet)
    build_model(BaseConfig(**TINY_BASE), tokenizer).save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


@pytest.fixture
def check_chunk():
    """The SampleChunk contract every sampler keeps: ids end with EOS exactly when finished, an
    unfinished sample is `max_new_tokens` long, texts are the ids decoded without EOS/special tokens."""

    def check(chunk, tokenizer, max_new_tokens: int) -> None:
        eos = tokenizer.eos_token_id
        assert chunk.finished.any() and not chunk.finished.all(), "settings should give both kinds"
        for generated, length, done, text in zip(
            chunk.token_ids, chunk.lengths, chunk.finished, chunk.texts, strict=True
        ):
            assert len(generated) == length <= max_new_tokens
            assert (generated[-1] == eos) == bool(done)
            assert eos not in generated[:-1]
            assert done or length == max_new_tokens
            assert text == tokenizer.decode([t for t in generated if t != eos], skip_special_tokens=True)

    return check
