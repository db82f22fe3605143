"""ProRL pieces that TRL's GRPOTrainer lacks: hard reference resets and dynamic sampling; and the trainer
that also carries the exploration options (train/exploration.py: pass@k advantage, W-REINFORCE, the
unlikeliness reward), which replace TRL's advantages of each scored generation batch.

- Reference reset: every `ref_reset_steps` optimizer steps the reference model becomes a copy of the
  policy (the KL anchor moves to where the policy is now), and by default the optimizer state is
  cleared, as in ProRL. Logged as `prorl/ref_reset` = 1 at that step. Refused with LoRA (see
  train.config.validate).
- Dynamic sampling: a group whose completions all got the same reward has zero advantage, so it
  carries no policy gradient but still dilutes a token-normalised loss. Such groups are masked out
  of the loss; with `dynamic_sampling_max_tries` > 0, fresh groups are generated (at most that
  many extra rounds) to take their place. Logged: `prorl/dynamic_sampling/dropped_fraction` (of the
  first round's groups), `.../refill_rounds`, `.../masked_fraction` (rows still masked after refills).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from trl import GRPOTrainer
from trl.distributed import DistributedBackend
from trl.trainer.callbacks import SyncRefModelCallback

from probe.distributed import barrier
from train.checkpoints import REFERENCE_FILE, mark_checkpoint_complete
from train.exploration import exploration_advantages

# Per-row tensors of a scored batch: how each is padded when rows of two batches are combined.
LEFT_PADDED = ("prompt_ids", "prompt_mask")
RIGHT_PADDED = (
    "completion_ids",
    "completion_mask",
    "tool_mask",
    "old_per_token_logps",
    "ref_per_token_logps",
    "sampling_per_token_logps",
    "importance_sampling_ratio",
)


# --- pure pieces


def uniform_groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """(rows,) rewards, NaN = unscorable -> (groups,) bool: True where all scorable rewards are equal.

    Rows are grouped as TRL groups them: consecutive runs of `num_generations`. A group with at
    most one scorable reward is uniform (no advantage can be formed).
    """
    grouped = rewards.view(-1, num_generations)  # (groups, G)
    missing = torch.isnan(grouped)
    high = grouped.masked_fill(missing, -torch.inf).amax(dim=1)  # (groups,)
    low = grouped.masked_fill(missing, torch.inf).amin(dim=1)  # (groups,)
    return (high == low) | ((~missing).sum(dim=1) <= 1)


def weighted_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(rows, funcs), (funcs,) -> (rows,): TRL's weighted sum; NaN where every function gave None."""
    total = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)  # (rows,)
    total[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    return total


def pad_rows(tensors: list[torch.Tensor], value: float, left: bool) -> torch.Tensor:
    """Stack (1, T_i) rows into (rows, max T_i), padding on the left or the right."""
    width = max(t.size(1) for t in tensors)
    padded = []
    for t in tensors:
        fill = t.new_full((1, width - t.size(1)), value)
        padded.append(torch.cat([fill, t] if left else [t, fill], dim=1))
    return torch.cat(padded, dim=0)


def take_rows(batches: list[dict], picks: list[tuple[int, int]], pad_token_id: int) -> dict:
    """A scored batch made of rows `picks` = [(batch index, row index), ...] of `batches`.

    Handles the text-only keys of TRL's scored batch; any other per-row key (images, ...) is refused.
    """
    known = {*LEFT_PADDED, *RIGHT_PADDED, "advantages", "num_items_in_batch"}
    unknown = sorted(set().union(*batches) - known)
    if unknown:
        raise NotImplementedError(f"dynamic sampling refill cannot combine batches holding {unknown}")
    out: dict = {}
    for key in batches[0]:
        if key == "num_items_in_batch":
            continue
        rows = [batches[b][key][r : r + 1] for b, r in picks]
        if key == "advantages" and rows[0].dim() == 1:
            out[key] = torch.cat(rows)
        else:
            value = pad_token_id if key in ("prompt_ids", "completion_ids") else 0
            out[key] = pad_rows(rows, value, left=key in LEFT_PADDED)
    return out


def clear_optimizer_state(optimizer) -> None:
    """Empty the state (moments, step counts) of the innermost torch optimizer; it re-initialises lazily."""
    inner = optimizer
    while hasattr(inner, "optimizer"):  # accelerate's AcceleratedOptimizer, DeepSpeed's ZeRO wrappers
        inner = inner.optimizer
    inner.state.clear()


# --- the trainer


class LeashGRPOTrainer(GRPOTrainer):
    """GRPOTrainer + exploration advantages + dynamic sampling + a place where callbacks add values to the
    trainer's own log row."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending_logs: dict[str, float] = {}  # joined into the next log row (probe metrics, reset events)
        self.stop_reason: str | None = None  # set when the run must stop without saving (NaN)
        # what callbacks save into each checkpoint dir before it is marked complete: f(checkpoint dir)
        self.checkpoint_writers: list[Callable[[Path], None]] = []
        self._last_rewards_per_func: torch.Tensor | None = None

    def _save_checkpoint(self, model, trial) -> None:
        # why: a checkpoint counts only once leash's manifest, written after every rank's files and the
        # callbacks' own, says so (train.checkpoints); older ones are rotated away only after that.
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        run_dir = Path(self._get_output_dir(trial=trial))
        checkpoint = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        for write in self.checkpoint_writers:
            write(checkpoint)
        barrier(f"{checkpoint.name} written", self.args.ddp_timeout)
        if self.args.should_save:
            mark_checkpoint_complete(checkpoint, self.state.global_step)
            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # why: callbacks' values must land in the trainer's own row at this step, not in a second row.
        logs.update(self.pending_logs)
        self.pending_logs.clear()
        super().log(logs, start_time)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # why: dynamic sampling needs the gathered per-function rewards, which TRL does not return.
        self._last_rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        return self._last_rewards_per_func

    def _last_rewards(self) -> torch.Tensor:
        """(global rows,) weighted rewards of the batch scored last, NaN where unscorable."""
        return weighted_rewards(self._last_rewards_per_func, self.reward_weights.to(self.accelerator.device))

    def _generate_and_score_completions(self, inputs):
        # why: exploration options and dynamic sampling act on the scored generation batch, before TRL
        # splits it into steps.
        output = self._scored(inputs)
        if not (self.args.dynamic_sampling and self.model.training):
            return output
        return self._dynamic_sampling(inputs, output)

    def _scored(self, inputs) -> dict:
        """TRL's scored batch, its advantages replaced when an exploration option is on (training only)."""
        output = super()._generate_and_score_completions(inputs)
        args = self.args
        if self.model.training and (args.advantage != "grpo" or args.unlikeliness_beta > 0):
            output["advantages"] = self._exploration_advantages(output)
        return output

    def _exploration_advantages(self, output: dict) -> torch.Tensor:
        """(local rows,) advantages from the gathered rewards of the batch scored last."""
        args = self.args
        rewards = self._last_rewards()  # (global rows,)
        logps = self._sequence_logps(output) if args.unlikeliness_beta > 0 else None  # (global rows,)
        advantages = exploration_advantages(
            rewards,
            self.num_generations,
            advantage=args.advantage,
            scale_rewards=args.scale_rewards,
            pass_k=args.pass_k,
            w_reinforce_lambda=args.w_reinforce_lambda,
            unlikeliness_beta=args.unlikeliness_beta,
            sequence_logps=logps,
        )  # (global rows,)
        local = output["advantages"].size(0)
        start = self.accelerator.process_index * local
        return advantages[start : start + local].to(output["advantages"].dtype)

    def _sequence_logps(self, output: dict) -> torch.Tensor:
        """(global rows,) log-likelihood of each completion under the policy that sampled it (temperature
        applied, as TRL scores tokens): TRL's old log-probs when it kept them, else one no-grad forward."""
        mask = output["completion_mask"]  # (local rows, completion length)
        logps = output.get("old_per_token_logps")
        if logps is None:
            with torch.no_grad():
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model,
                    torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1),
                    torch.cat([output["prompt_mask"], mask], dim=1),
                    output["completion_ids"].size(1),
                    batch_size=self.args.per_device_train_batch_size,
                )
        return self.accelerator.gather((logps * mask).sum(dim=1))  # (global rows,)

    def _informative_rows(self) -> torch.Tensor:
        """(global rows,) bool for the batch scored last: False for rows of uniform-reward groups."""
        uniform = uniform_groups(self._last_rewards(), self.num_generations)  # (groups,)
        return ~uniform.repeat_interleave(self.num_generations)

    def _refill_inputs(self, round_index: int, local_size: int) -> list[dict]:
        """Fresh prompts for a refill round: the same draw on every rank (seeded by step and round)."""
        rng = np.random.default_rng([self.args.seed, self.state.global_step, round_index])
        groups = rng.integers(
            len(self.train_dataset), size=self.args.generation_batch_size // self.num_generations
        )
        rows = [self.train_dataset[int(i)] for i in groups for _ in range(self.num_generations)]
        start = self.accelerator.process_index * local_size
        return rows[start : start + local_size]

    def _dynamic_sampling(self, inputs: list[dict], output: dict) -> dict:
        local, rank, ranks = len(inputs), self.accelerator.process_index, self.accelerator.num_processes
        informative = [self._informative_rows()]  # per round: (global rows,) bool
        self._metrics["train"]["prorl/dynamic_sampling/dropped_fraction"].append(
            1.0 - informative[0].float().mean().item()
        )
        batches = [output]

        def short_on_some_rank() -> bool:  # same answer on every rank: it reads gathered rewards only
            found = torch.stack(informative).view(len(informative), ranks, local).sum(dim=(0, 2))  # (ranks,)
            return bool((found < local).any())

        while len(batches) <= self.args.dynamic_sampling_max_tries and short_on_some_rank():
            batches.append(self._scored(self._refill_inputs(len(batches), local)))
            informative.append(self._informative_rows())
        self._metrics["train"]["prorl/dynamic_sampling/refill_rounds"].append(float(len(batches) - 1))

        mine = [keep[rank * local : (rank + 1) * local] for keep in informative]  # per round: (local,)
        good = [(b, r) for b, keep in enumerate(mine) for r in range(local) if keep[r]]
        dropped = [(0, r) for r in range(local) if not mine[0][r]]
        picks = (good + dropped)[:local]
        result = output if len(batches) == 1 else take_rows(batches, picks, self._tokenizer.pad_token_id)
        keep_rows = torch.tensor([bool(mine[b][r]) for b, r in picks], device=self.accelerator.device)
        if len(batches) == 1:  # nothing refilled: rows stay in place
            keep_rows = mine[0].to(self.accelerator.device)
        result["completion_mask"] = result["completion_mask"] * keep_rows.unsqueeze(1).to(
            result["completion_mask"].dtype
        )
        loss_mask = result["completion_mask"] * result.get("tool_mask", 1)
        result["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        masked = self.accelerator.gather((~keep_rows).float().mean().unsqueeze(0)).mean().item()
        self._metrics["train"]["prorl/dynamic_sampling/masked_fraction"].append(masked)
        return result


# --- reference reset


def reset_reference(trainer: LeashGRPOTrainer, reset_optimizer: bool) -> None:
    """Copy the policy's weights into the reference model (and optionally clear the optimizer state)."""
    policy = trainer.accelerator.unwrap_model(trainer.model)
    SyncRefModelCallback.sync_target_model(policy, trainer.ref_model, alpha=1.0)
    if reset_optimizer:
        clear_optimizer_state(trainer.optimizer)


class ReferenceResetCallback(TrainerCallback):
    """Hard reference reset every `ref_reset_steps`; the moved reference is saved in each checkpoint,
    before the checkpoint is marked complete (a checkpoint writer of the trainer).

    Under ZeRO-3 each rank holds only its partition of the reference (empty tensors outside a gather),
    so saving and loading gather it: every rank enters, rank 0 reads or writes the file.
    """

    def __init__(self, trainer: LeashGRPOTrainer):
        if trainer.ref_model is None:
            raise ValueError("reference resets need a reference model (beta > 0, full fine-tuning)")
        self.trainer = trainer
        trainer.checkpoint_writers.append(self.save_reference)

    def reference(self) -> torch.nn.Module:
        return self.trainer.accelerator.unwrap_model(self.trainer.ref_model)

    def on_train_begin(self, args, state, control, **kwargs):
        saved = Path(args.output_dir) / f"checkpoint-{state.global_step}" / REFERENCE_FILE
        if state.global_step == 0 or not saved.is_file():
            return  # the reference is still the base, which the trainer loaded from model_name_or_path
        # resumed after a reset: restore the moved reference
        reference = self.reference()
        if not DistributedBackend(self.trainer.accelerator).is_zero3:
            load_model(reference, str(saved))
            return
        import deepspeed  # why: only importable where DeepSpeed is installed and only needed under ZeRO-3

        # rank 0 loads into the gathered weights; on exit they are partitioned again to every rank
        with deepspeed.zero.GatheredParameters(list(reference.parameters()), modifier_rank=0):
            if state.is_world_process_zero:
                load_model(reference, str(saved))

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.ref_reset_steps or self.trainer.stop_reason:
            return
        reset_reference(self.trainer, args.reset_optimizer_on_ref_reset)
        self.trainer.pending_logs["prorl/ref_reset"] = 1.0
        control.should_log = True

    def save_reference(self, checkpoint: Path) -> None:
        """Every rank enters (the ZeRO-3 gather); rank 0 writes."""
        state = self.trainer.state
        if state.global_step < self.trainer.args.ref_reset_steps:
            return  # the reference is still the base model, which resume reloads from model_name_or_path
        reference = self.reference()
        with DistributedBackend(self.trainer.accelerator).gather_params(list(reference.parameters())):
            if state.is_world_process_zero:
                save_model(reference, str(checkpoint / REFERENCE_FILE))
