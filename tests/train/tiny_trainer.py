"""A LeashGRPOTrainer on CPU over the tiny random model: one step of two groups of 4 completions of up to 6
tokens unless `overrides` say otherwise (the trainer tests' shared settings)."""

from __future__ import annotations

from datasets import Dataset
from transformers import AutoTokenizer

from train.config import LeashGRPOConfig
from train.prorl import LeashGRPOTrainer


def tiny_trainer(model_dir, tmp_path, reward_func, dataset: Dataset, **overrides) -> LeashGRPOTrainer:
    """`overrides` go to LeashGRPOConfig over the shared settings; the run dir is tmp_path/run."""
    settings = dict(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        max_steps=1,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=6,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    settings.update(overrides)
    return LeashGRPOTrainer(
        model=str(model_dir),
        reward_funcs=[reward_func],
        args=LeashGRPOConfig(**settings),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
