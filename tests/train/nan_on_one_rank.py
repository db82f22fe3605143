"""`accelerate launch ... tests/train/nan_on_one_rank.py STEP [train options]`: the real `python -m train`
with one fault injected: at optimizer step STEP the last rank's running loss turns NaN, while every
other rank's stays finite (a rank-local NaN, as from one bad micro-batch)."""

from __future__ import annotations

import sys

import torch

from train import callbacks, grpo


def main() -> None:
    step, train_args = int(sys.argv[1]), sys.argv[2:]
    guard = callbacks.NaNGuardCallback.on_step_end

    def on_step_end(self, args, state, control, **kwargs):
        accelerator = self.trainer.accelerator
        if state.global_step == step and accelerator.process_index == accelerator.num_processes - 1:
            self.trainer._tr_loss = torch.full_like(self.trainer._tr_loss, torch.nan)
        return guard(self, args, state, control, **kwargs)

    callbacks.NaNGuardCallback.on_step_end = on_step_end
    sys.exit(grpo.cli(train_args))


if __name__ == "__main__":
    main()
