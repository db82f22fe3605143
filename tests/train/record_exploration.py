"""`accelerate launch ... tests/train/record_exploration.py OUT_DIR [train options]`: the real
`python -m train`, with each rank writing OUT_DIR/rank-R.jsonl: one line per generation batch it trained on,
holding what that rank itself contributed to the global batch before any cross-rank gather (its rows' prompt
ids, per-function rewards and, with the unlikeliness reward, sequence log-likelihoods), what the gathers
handed back, and the advantages the rank then used. Nothing the trainer computes is changed: every wrapper
calls the original and returns its result, so a test can rebuild the global batch from the ranks' own rows
and check the advantages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trl.trainer.grpo_trainer as grpo_trainer

from train import grpo
from train.prorl import LeashGRPOTrainer


def main() -> None:
    out_dir, train_args = Path(sys.argv[1]), sys.argv[2:]
    calculate_rewards = LeashGRPOTrainer._calculate_rewards
    sequence_logps = LeashGRPOTrainer._sequence_logps
    scored = LeashGRPOTrainer._scored
    gather = grpo_trainer.gather
    pending: dict = {}  # this rank's record of the generation batch being scored

    def recording_gather(key: str, gather_function):
        def recorded(tensor):
            gathered = gather_function(tensor)
            pending[f"local_{key}"] = tensor.tolist()
            pending[f"gathered_{key}"] = gathered.tolist()
            return gathered

        return recorded

    def _calculate_rewards(self, *args):
        # why: TRL gathers the per-function rewards inside _calculate_rewards with accelerate's `gather`,
        # imported into its module; swapped only for this call
        grpo_trainer.gather = recording_gather("rewards_per_func", gather)
        try:
            return calculate_rewards(self, *args)
        finally:
            grpo_trainer.gather = gather

    def _sequence_logps(self, output):
        accelerator_gather = self.accelerator.gather
        self.accelerator.gather = recording_gather("sequence_logps", accelerator_gather)
        try:
            return sequence_logps(self, output)
        finally:
            del self.accelerator.gather  # the instance attribute shadowed the bound method

    def _scored(self, inputs):
        output = scored(self, inputs)
        rows = zip(output["prompt_ids"], output["prompt_mask"], strict=True)
        prompts = [ids[mask.bool()].tolist() for ids, mask in rows]  # left padding dropped
        record = {
            "rank": self.accelerator.process_index,
            "ranks": self.accelerator.num_processes,
            "step": self.state.global_step,
            "num_generations": self.num_generations,
            "reward_weights": self.reward_weights.tolist(),
            "prompt_ids": prompts,
            "advantages": output["advantages"].tolist(),
            **pending,
        }
        pending.clear()
        with (out_dir / f"rank-{record['rank']}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        return output

    LeashGRPOTrainer._calculate_rewards = _calculate_rewards
    LeashGRPOTrainer._sequence_logps = _sequence_logps
    LeashGRPOTrainer._scored = _scored
    sys.exit(grpo.cli(train_args))


if __name__ == "__main__":
    main()
