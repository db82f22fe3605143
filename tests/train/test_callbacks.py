"""Callbacks: the NaN guard stops without saving, W&B falls back to offline with a kept run id,
and the W&B callback keeps leash's namespaces."""

from __future__ import annotations

import math
from types import SimpleNamespace

from datasets import Dataset
from transformers import AutoTokenizer, TrainerControl, TrainerState

from train.callbacks import LeashWandbCallback, NaNGuardCallback, prepare_wandb_env
from train.config import LeashGRPOConfig
from train.prorl import LeashGRPOTrainer


def _no_reward(prompts, completions, **kwargs):
    return [None] * len(completions)  # every completion unscorable: the mean reward is NaN


def _guarded_trainer(model_dir, run_dir, reward, **overrides) -> LeashGRPOTrainer:
    """A 3-step trainer on the untrained tiny model with the NaN guard; `overrides` go to the config."""
    settings = dict(
        output_dir=str(run_dir), use_cpu=True, bf16=False, activation_checkpointing=False, max_steps=3,
        per_device_train_batch_size=4, num_generations=2, max_completion_length=4, report_to="none",
        save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    dataset = Dataset.from_dict({"prompt": ["1 2=3:"] * 4, "problem_id": ["a"] * 4})
    trainer = LeashGRPOTrainer(
        model=str(model_dir), reward_funcs=[reward], args=LeashGRPOConfig(**{**settings, **overrides}),
        train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(model_dir),
    )  # fmt: skip
    trainer.add_callback(NaNGuardCallback(trainer))
    return trainer


def test_nan_reward_stops_the_run_without_saving_that_step(tiny_random_model, tmp_path):
    run_dir = tmp_path / "run"
    trainer = _guarded_trainer(tiny_random_model, run_dir, _no_reward, save_strategy="steps", save_steps=1)
    trainer.train()
    assert trainer.state.global_step == 1
    assert trainer.stop_reason.startswith("non-finite reward at step 1")
    assert "last good checkpoint: none" in trainer.stop_reason
    assert not list(run_dir.glob("checkpoint-*"))


def _alternating(prompts, completions, **kwargs):
    return [float(i % 2) for i in range(len(completions))]


def test_nan_loss_stops_the_run(tiny_random_model, tmp_path, monkeypatch):
    """HF's logging_nan_inf_filter (on by default) would keep a NaN loss out of what the guard reads."""
    trainer = _guarded_trainer(tiny_random_model, tmp_path / "run", _alternating)
    compute_loss = trainer.compute_loss
    monkeypatch.setattr(trainer, "compute_loss", lambda *a, **k: compute_loss(*a, **k) * float("nan"))
    trainer.train()
    assert trainer.state.global_step == 1
    assert trainer.stop_reason.startswith("non-finite loss at step 1 on rank(s) [0]")


def _infinite(prompts, completions, **kwargs):
    return [math.inf] * len(completions)


def test_infinite_mean_reward_stops_the_run(tiny_random_model, tmp_path):
    trainer = _guarded_trainer(tiny_random_model, tmp_path / "run", _infinite)
    trainer.train()
    assert trainer.state.global_step == 1
    assert "non-finite" in trainer.stop_reason and "reward" in trainer.stop_reason


def test_wandb_goes_offline_under_run_and_keeps_the_run_id(tmp_path, monkeypatch):
    for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    run_dir = tmp_path / "run"
    prepare_wandb_env(run_dir, "leash")
    import os

    first = os.environ["WANDB_RUN_ID"]
    assert os.environ["WANDB_MODE"] == "offline"
    assert os.environ["WANDB_DIR"] == str(run_dir.resolve())
    assert os.environ["WANDB_RESUME"] == "allow"
    assert (run_dir / "wandb_run_id").read_text().strip() == first
    monkeypatch.delenv("WANDB_RUN_ID")
    prepare_wandb_env(run_dir, "leash")  # a resumed run reads the same id back
    assert os.environ["WANDB_RUN_ID"] == first


def wandb_callback(**run) -> tuple[LeashWandbCallback, list[dict], SimpleNamespace]:
    """LeashWandbCallback on a stand-in for the wandb module: (callback, rows logged, the run)."""
    logged: list[dict] = []
    fake_run = SimpleNamespace(summary={}, **run)
    callback = LeashWandbCallback()
    callback._wandb, callback._initialized = SimpleNamespace(run=fake_run, log=logged.append), True
    return callback, logged, fake_run


def test_wandb_keys_keep_leash_namespaces_and_prefix_the_rest(tmp_path):
    callback, logged, run = wandb_callback()
    state = TrainerState()
    state.global_step, state.is_world_process_zero = 7, True
    logs = {"loss": 0.5, "probe/pass@1": 0.25, "prorl/ref_reset": 1.0, "train_runtime": 3.0}
    callback.on_log(None, state, TrainerControl(), logs=logs)
    assert logged == [
        {"train/loss": 0.5, "probe/pass@1": 0.25, "prorl/ref_reset": 1.0, "train/global_step": 7}
    ]
    assert run.summary == {"train_runtime": 3.0}


def test_a_resumed_offline_run_logs_the_checkpoints_history_again_and_supersedes_its_earlier_dirs(tmp_path):
    wandb_dir = tmp_path / "wandb"
    for name in ("offline-run-20260101_000000-abc", "offline-run-20260102_000000-abc", "offline-run-1-other"):
        (wandb_dir / name).mkdir(parents=True)
    current = wandb_dir / "offline-run-20260103_000000-abc"
    current.mkdir()
    callback, logged, _ = wandb_callback(offline=True, id="abc", sync_dir=str(current))
    state = TrainerState()
    state.global_step, state.is_world_process_zero = 2, True
    state.log_history = [{"probe/pass@1": 0.1, "step": 0}, {"loss": 0.5, "step": 1}, {"loss": 0.4, "step": 2}]
    callback.continue_offline_run(state)
    assert logged == [
        {"probe/pass@1": 0.1, "train/global_step": 0},
        {"train/loss": 0.5, "train/global_step": 1},
        {"train/loss": 0.4, "train/global_step": 2},
    ]
    assert sorted(p.name for p in (tmp_path / "wandb-superseded").iterdir()) == [
        "offline-run-20260101_000000-abc",
        "offline-run-20260102_000000-abc",
    ]
    assert sorted(p.name for p in wandb_dir.iterdir()) == ["offline-run-1-other", current.name]
