"""Run `python -m train` and end it at a named point, as a power cut, the OOM killer or a crash would.

    python tests/reliability/kill_at.py POINT STEP TRAIN_ARGS...

Points (STEP: the training step whose save or log row is hit):
  checkpoint_dir_created  SIGKILL the moment RUN/checkpoint-STEP/ exists, nothing in it yet
  optimizer_half_written  SIGKILL with half of checkpoint-STEP/optimizer.pt on disk
  before_marker           SIGKILL once every trainer file of checkpoint-STEP is written (trainer_state.json
                          is HF's last), before leash marks the checkpoint complete
  final_tokenizer_empty   SIGKILL in the final save (STEP unused): weights whole, tokenizer_config.json
                          0 bytes, tokenizer.json not written (the state issue 11 found)
  after_log               SIGKILL right after the trainer's log row of step STEP went to the loggers
  crash_after_log         as after_log, but an exception: the process exits 1 and the loggers flush

Only the kill is injected; everything else is the real `python -m train`.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys
from pathlib import Path

import torch
from transformers import Trainer, TrainerState
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from train.grpo import cli
from train.prorl import LeashGRPOTrainer

CHECKPOINT = re.compile(r"checkpoint-\d+")


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str, step: int) -> None:
    checkpoint = f"checkpoint-{step}"
    if point == "checkpoint_dir_created":
        save_model = Trainer.save_model

        def save_model_then_die(self, output_dir=None, _internal_call=False):
            if output_dir is not None and Path(output_dir).name == checkpoint:
                os.makedirs(output_dir, exist_ok=True)
                die()
            return save_model(self, output_dir, _internal_call)

        Trainer.save_model = save_model_then_die
    elif point == "optimizer_half_written":
        save = torch.save

        def save_half_then_die(obj, f, *args, **kwargs):
            if str(f).endswith(f"{checkpoint}/optimizer.pt"):
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                with open(f, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                die()
            return save(obj, f, *args, **kwargs)

        torch.save = save_half_then_die
    elif point == "before_marker":
        save_to_json = TrainerState.save_to_json

        def save_state_then_die(self, json_path):
            save_to_json(self, json_path)
            if Path(json_path).parent.name == checkpoint:
                die()

        TrainerState.save_to_json = save_state_then_die
    elif point == "final_tokenizer_empty":
        save_pretrained = TokenizersBackend.save_pretrained

        def save_empty_then_die(self, save_directory, *args, **kwargs):
            if not CHECKPOINT.fullmatch(Path(save_directory).name):
                (Path(save_directory) / "tokenizer_config.json").write_bytes(b"")
                die()
            return save_pretrained(self, save_directory, *args, **kwargs)

        TokenizersBackend.save_pretrained = save_empty_then_die
    elif point in ("after_log", "crash_after_log"):
        log = LeashGRPOTrainer.log

        def log_then_end(self, logs, start_time=None):
            log(self, logs, start_time)
            if self.state.global_step == step and "loss" in logs:
                if point == "after_log":
                    die()
                raise RuntimeError(f"crash injected after the log row of step {step}")

        LeashGRPOTrainer.log = log_then_end
    else:
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    sys.exit(cli(sys.argv[3:]))
