"""A checkpoint for the probe: its directory checked, model and tokenizer loaded onto a device,
prompts encoded as the trainer encodes them, and the eval-mode toggle while a model is probed.

One place for both backends: `load_vllm` checks the same directory and loads the same tokenizer as
`load_model` (and merges a LoRA adapter through it); `make_vllm_engine` builds the engine itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from probe.cli import ConfigError, InputError
from probe.config import ProbeConfig
from probe.files import read_manifest
from probe.store import FINAL_ASIDE, FINAL_MANIFEST

logger = logging.getLogger(__name__)

# Files any of which gives a tokenizer its vocabulary (fast tokenizers: tokenizer.json; sentencepiece:
# *.model; BPE/WordPiece: vocab.*, merges.txt; tiktoken: *.tiktoken).
TOKENIZER_VOCABULARIES = ("tokenizer.json", "*.model", "vocab.*", "merges.txt", "*.tiktoken")
DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(InputError):
    """The --model directory cannot be probed (missing, not a causal LM, unusable tokenizer)."""


def process_state() -> PartialState:
    """accelerate's process state; on a machine without CUDA, gloo ranks (a plain
    `PartialState()` there ignores `accelerate launch` and makes every process rank 0 of 1)."""
    return PartialState(cpu=not torch.cuda.is_available())


def torch_dtype(name: str) -> torch.dtype | str:
    if name not in DTYPES:
        raise ConfigError(f"dtype: {name!r} is not one of {sorted(DTYPES)}")
    return DTYPES[name]


def check_model_dir(path: str, what: str = "--model") -> Path:
    """The checkpoint directory, or ModelError naming what is wrong with it (`what`: the option that
    named it): a training run whose final save was interrupted, a missing or torn config.json, a
    missing, empty or truncated weights file, no tokenizer vocabulary. Read before any model code."""
    directory = Path(path)
    if not path or not directory.is_dir():
        raise ModelError(f"{what}: {path!r} is not a directory")
    if (directory / FINAL_ASIDE).exists() or (
        (directory / FINAL_MANIFEST).exists() and read_manifest(directory, FINAL_MANIFEST) is None
    ):
        raise ModelError(
            f"{what} {path}: the final save of this training run was interrupted; rerun the training "
            f"command to finish it (it redoes the save from the last checkpoint), or use {path}/checkpoint-N"
        )
    adapter = (directory / "adapter_config.json").exists()
    config = directory / ("adapter_config.json" if adapter else "config.json")
    if not config.is_file():
        raise ModelError(f"{what} {path}: no config.json (not a model checkpoint dir)")
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
        if not isinstance(settings, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        raise ModelError(f"{what} {path}: {config.name} is unreadable ({error})") from None
    model_type = settings.get("model_type")
    if not adapter and "auto_map" not in settings and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(f"{what} {path}: not a causal LM checkpoint (model_type {model_type!r})")
    for weights in _weight_files(directory, what, adapter):
        check_weights_file(weights, what)
    if not any(found.is_file() for pattern in TOKENIZER_VOCABULARIES for found in directory.glob(pattern)):
        raise ModelError(f"{what} {path}: no tokenizer.json (nor another tokenizer vocabulary file)")
    return directory


def _weight_files(directory: Path, what: str, adapter: bool) -> list[Path]:
    stem = "adapter_model" if adapter else "model"
    index = directory / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
            raise ModelError(f"{what} {directory}: {index.name} is unreadable ({error})") from None
        return [directory / shard for shard in shards]
    for name in (f"{stem}.safetensors", f"{stem}.bin", "pytorch_model.bin"):
        if (directory / name).is_file():
            return [directory / name]
    raise ModelError(f"{what} {directory}: no weights file ({stem}.safetensors)")


def check_weights_file(path: Path, what: str = "--model") -> None:
    """ModelError naming a weights file that is missing, empty, or (safetensors) whose header or size
    does not add up: a file cut short by a kill or a full disk."""
    if not path.is_file():
        raise ModelError(f"{what}: {path} is missing")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{what}: {path} is empty (0 bytes)")
    if path.suffix != ".safetensors":
        return
    # safetensors: 8-byte little-endian header length, a JSON header whose tensors' data_offsets end at
    # the buffer's size, then the buffer
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else None
        if length is None or 8 + length > size:
            raise ModelError(f"{what}: {path} is truncated ({size} bytes, shorter than its own header)")
        try:
            header = json.loads(handle.read(length))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
            raise ModelError(
                f"{what}: {path} is corrupt (its header is not a safetensors header: {error})"
            ) from None
    if 8 + length + end != size:
        state = "truncated" if 8 + length + end > size else "corrupt"
        raise ModelError(
            f"{what}: {path} is {state} ({size} bytes on disk, its header says {8 + length + end})"
        )


def load_tokenizer(path: str):
    """The checkpoint's tokenizer; one without a pad token pads with its EOS token (and says so)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelError(
            f"--model {path}: the tokenizer does not load ({str(error).splitlines()[0]})"
        ) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"--model {path}: the tokenizer has neither a pad nor an EOS token")
        logger.warning("tokenizer of %s has no pad token: using its EOS token %r", path, tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, dtype: str = "auto", device: str = "auto"):
    """(model in eval mode on `device`, tokenizer) from a checkpoint dir: a full model or a PEFT
    adapter (merged into its base). device "auto": this process's accelerator, else CPU."""
    directory = check_model_dir(path)
    if (directory / "adapter_config.json").exists():
        # why: importing peft adds seconds to every start-up (~10 s under load); only adapters need it
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype)).merge_and_unload()
    else:
        try:
            AutoConfig.from_pretrained(path)  # a dir without a model config fails here, clearly
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
        except (OSError, ValueError, KeyError) as error:
            raise ModelError(f"--model {path}: not a causal LM checkpoint ({error})") from None
    tokenizer = load_tokenizer(path)
    if device == "auto":
        device = process_state().device if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), tokenizer


def checkpoint_dtype(model_path: str | Path) -> str:
    """The dtype a checkpoint's config.json names ("float32" when it names none, as transformers does)."""
    config = json.loads((Path(model_path) / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "float32")


def require_vllm():
    """vllm's LLM class, or a ConfigError saying how to install it (checked before a probe takes its dir)."""
    try:
        # why: vllm is an optional, heavy dependency
        from vllm import LLM
    except ImportError:
        raise ConfigError(
            "ProbeConfig.backend vllm needs the vllm package: pip install 'leash[vllm]' (CUDA GPUs), "
            "or `make vllm-setup` and .venv-vllm/bin/python (CPU)"
        ) from None
    return LLM


def make_vllm_engine(
    model_path: str,
    *,
    seed: int,
    dtype: str = "auto",
    gpu_memory_utilization: float = 0.9,
    max_logprobs: int = 20,
    enforce_eager: bool = False,
):
    """A vllm.LLM whose returned logprobs are post-temperature (see probe.sampling.VLLMSampler).

    dtype "auto" is the checkpoint's own dtype, as transformers loads it (vLLM's own "auto" would
    turn a float32 checkpoint into bfloat16).
    """
    LLM = require_vllm()
    return LLM(
        model=model_path,
        seed=seed,
        dtype=checkpoint_dtype(model_path) if dtype == "auto" else dtype,
        gpu_memory_utilization=gpu_memory_utilization,
        max_logprobs=max_logprobs,
        logprobs_mode="processed_logprobs",
        enforce_eager=enforce_eager,
    )


def load_vllm(path: str, config: ProbeConfig):
    """(vllm.LLM, tokenizer) from a checkpoint dir. A LoRA adapter dir is merged into its base
    (`load_model`, on the CPU) and saved to a temporary dir first: vLLM loads full checkpoints; the
    engine has read the weights once it is built, so the dir is removed then."""
    directory = check_model_dir(path)
    torch_dtype(config.dtype)  # an unknown dtype is refused by name, as load_model refuses it
    settings = dict(
        seed=config.sampling_seed,
        dtype=config.dtype,
        gpu_memory_utilization=config.vllm_gpu_memory_utilization,
        max_logprobs=config.vllm_num_logprobs,
        enforce_eager=config.vllm_enforce_eager,
    )
    if not (directory / "adapter_config.json").exists():
        return make_vllm_engine(path, **settings), load_tokenizer(path)
    model, tokenizer = load_model(path, config.dtype, "cpu")
    with tempfile.TemporaryDirectory(prefix="leash-merged-lora-") as merged:
        model.save_pretrained(merged)
        tokenizer.save_pretrained(merged)
        del model
        logger.info("%s: LoRA adapter merged into its base for vLLM", path)
        return make_vllm_engine(merged, **settings), tokenizer


def encode_prompt(tokenizer, prompt: str, prompt_format: str) -> list[int]:
    """Prompt token ids: chat format through the tokenizer's chat template, compact as raw text.

    No special tokens are added to compact prompts (TRL tokenizes training prompts the same way).
    """
    if prompt_format == "chat" and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """The model in eval mode (no dropout) while it is probed, back in training mode afterwards if it
    was training (a trainer's policy). A model without modes (a vllm.LLM) is left as it is."""
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()
