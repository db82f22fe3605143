"""Helpers of the vLLM tests (no vllm import at module level)."""

from __future__ import annotations

import json
from pathlib import Path


def model_vocab(model_dir: Path) -> int:
    """Rows of the model's output layer (the tokenizer may count one more token after a reload)."""
    return json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"]
