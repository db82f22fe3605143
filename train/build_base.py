"""Build an embedded base model: a char-level tokenizer, a tiny Llama-style LM and SFT on a task.

`python -m train.build_base --config configs/base/countdown_tiny.yaml --output_dir DIR`

An *SFT source* supplies everything task-specific: its `alphabet` (one token per character) and
its SFT examples (`sft_examples(count, seed, held_out)`: problems drawn like the probe set's, none of
the probe set's own, each with every valid completion). Each SFT row draws one completion uniformly,
so the model learns to sample many distinct correct answers (the breadth that RLVR later narrows).

Two sources:
- the probe recipe's task itself, when it has an alphabet (countdown);
- a data generator (`data_generator: arith`, probe.tasks.arith) for a task that reads its problems
  from files (math): the builder first writes the probe set to the probe recipe's `data_path` and the
  RL training set to `arith_train_path` (.jsonl in the real math recipes' schema), then reads the probe
  set back through the task, as the probe will, to hold it out.

DIR is cached: it holds the resolved config and its fingerprint; the same config reuses it, a
different one is refused unless `--overwrite`. Data files are checked on every run: one holding other
rows is refused unless `--overwrite` (a probe dir's identity names the file, not its rows).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from probe.cli import ConfigError, parse, run_command
from probe.config import SAMPLING_KEYS
from probe.store import write_atomic
from probe.tasks import SFTExample, TaskConfig, make_task, task_class
from probe.tasks.arith import ArithConfig, ArithData, dump_rows

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
CONFIG_FILE = "base_config.json"


@dataclass
class BaseConfig:
    """Everything that decides the base model; the fingerprint of these values names the build."""

    output_dir: str = field(
        default="", metadata={"help": "Directory the model and tokenizer are written to."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace an existing DIR that was built with a different config."}
    )
    probe_recipe: str = field(
        default="configs/probe/countdown_tiny.yaml",
        metadata={
            "help": "Probe recipe whose task section gives the problem distribution and the held-out set."
        },
    )
    data_generator: str = field(
        default="",
        metadata={
            "help": "'' : the probe recipe's task supplies the SFT examples (countdown); 'arith': the "
            "project's arithmetic generator writes the probe set (the probe recipe's data_path, task math) "
            "and the RL set (arith_train_path) and supplies the SFT examples (arith_* keys)."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the SFT problems, the model init and the batches."}
    )
    num_train_problems: int = field(
        default=30000,
        metadata={"help": "SFT problems drawn (distinct keys not required); probe keys excluded."},
    )
    hidden_size: int = field(default=128, metadata={"help": "Model hidden size."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Decoder layers."})
    num_attention_heads: int = field(default=4, metadata={"help": "Query heads."})
    num_key_value_heads: int = field(
        default=2, metadata={"help": "Key/value heads (grouped-query attention)."}
    )
    intermediate_size: int = field(default=512, metadata={"help": "MLP width."})
    max_position_embeddings: int = field(
        default=128, metadata={"help": "Longest sequence the model supports."}
    )
    max_steps: int = field(default=500, metadata={"help": "SFT optimizer steps."})
    batch_size: int = field(default=128, metadata={"help": "Examples per SFT step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "AdamW peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warmup steps before the cosine decay."})
    min_lr_ratio: float = field(
        default=0.1, metadata={"help": "Final learning rate as a fraction of the peak."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 keeps torch's default."})
    log_every: int = field(default=50, metadata={"help": "Print the SFT loss every this many steps."})


# --- config, fingerprint, cache


def fingerprint(resolved: dict) -> str:
    """sha256 of the canonical JSON of everything that decides the build (16 hex digits)."""
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]


GENERATORS = ("arith",)


def load_task_config(probe_recipe: str | Path, data_generator: str = "") -> TaskConfig:
    """The TaskConfig of a probe recipe: its task keys only (the sampling keys belong to the probe);
    ConfigError when neither the task nor `data_generator` can supply an embedded base model."""
    path = Path(probe_recipe)
    if not path.is_file():
        raise ConfigError(f"BaseConfig.probe_recipe: no such file {str(path)!r}")
    (task_config,) = parse((TaskConfig,), ["--config", str(path)], recipe_ignores=SAMPLING_KEYS)
    if data_generator:
        if data_generator not in GENERATORS:
            raise ConfigError(f"BaseConfig.data_generator: {data_generator!r} is not one of {GENERATORS}")
        if task_config.task != "math" or not (task_config.data_path or "").endswith(".jsonl"):
            raise ConfigError(
                f"BaseConfig.data_generator {data_generator!r} writes math problems: the probe recipe "
                f"{path} must have task: math and a data_path ending in .jsonl "
                f"(got task {task_config.task!r}, data_path {task_config.data_path!r})"
            )
    elif not task_class(task_config.task).alphabet:
        raise ConfigError(
            f"BaseConfig.probe_recipe: task {task_config.task!r} has no embedded base model "
            "(tasks with an alphabet have one: countdown; math: set data_generator: arith)"
        )
    return task_config


def resolve(config: BaseConfig, task_config: TaskConfig, generator: ArithConfig | None = None) -> dict:
    """What decides the build: the base config (less where/whether to write and how to run), the task,
    and the generator's settings when there is one (less where it writes the RL set)."""
    not_deciding = ["output_dir", "overwrite", "log_every", "num_threads"]
    if not config.data_generator:  # decides nothing then (and countdown builds keep their fingerprint)
        not_deciding.append("data_generator")
    base = {k: v for k, v in dataclasses.asdict(config).items() if k not in not_deciding}
    resolved = {"base": base, "task": dataclasses.asdict(task_config)}
    if config.data_generator:
        settings = dataclasses.asdict(generator or ArithConfig())
        resolved["generator"] = {k: v for k, v in settings.items() if k != "arith_train_path"}
    return resolved


def check_generator_config(config: BaseConfig, generator: ArithConfig | None) -> None:
    """Refuse arith_* settings in a build that has no generator to read them."""
    if generator is None or config.data_generator:
        return
    defaults = dataclasses.asdict(ArithConfig())
    changed = sorted(k for k, v in dataclasses.asdict(generator).items() if v != defaults[k])
    if changed:
        raise ConfigError(f"BaseConfig: {changed} set but data_generator is empty (nothing reads them)")


def write_data_file(path: str | Path, rows: list[dict], overwrite: bool) -> None:
    """Write `rows` as .jsonl at `path`, or keep an identical file; refuse (ConfigError) one holding
    other rows unless `overwrite`."""
    path = Path(path)
    data = dump_rows(rows)
    if path.is_file() and path.read_bytes() == data:
        return
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{path} holds other problems than this config generates; pass --overwrite to replace it "
            "(probe dirs made on the old rows no longer match their problem set)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def cached(output_dir: Path, resolved: dict, overwrite: bool) -> bool:
    """True if DIR already holds this build; refuse a different finished or unfinished build."""
    config_path = output_dir / CONFIG_FILE
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return False
    if not config_path.is_file():
        if overwrite:
            return False
        raise ConfigError(
            f"{output_dir} exists and is not a base model directory; pass --overwrite to replace it"
        )
    saved = json.loads(config_path.read_text())
    if saved.get("fingerprint") == fingerprint(resolved) and saved.get("finished"):
        return True
    if saved.get("fingerprint") != fingerprint(resolved) and not overwrite:
        raise ConfigError(
            f"{output_dir} holds a base model built with another config (fingerprint "
            f"{saved.get('fingerprint')} != {fingerprint(resolved)}); pass --overwrite to replace it"
        )
    return False


# --- tokenizer


def build_tokenizer(alphabet: str):
    """Char-level WordLevel tokenizer over a task's alphabet, as a PreTrainedTokenizerFast.

    Every character is its own token (space included); pad/eos/unk specials; left padding for
    generation. transformers 5 saves it as `TokenizersBackend` (its PreTrainedTokenizerFast);
    `check_saved_tokenizer` makes sure AutoTokenizer gives it back with identical ids.
    """
    vocab = {token: i for i, token in enumerate([PAD, EOS, UNK, *alphabet])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
    )


def check_saved_tokenizer(output_dir: Path, tokenizer, texts: Sequence[str]) -> None:
    """Raise if AutoTokenizer.from_pretrained(output_dir) encodes `texts` differently (spaces included)."""
    loaded = AutoTokenizer.from_pretrained(output_dir)
    for text in texts:
        if loaded(text)["input_ids"] != tokenizer(text)["input_ids"]:
            raise RuntimeError(
                f"AutoTokenizer loads {type(loaded).__name__} from {output_dir}, which encodes {text!r} "
                "differently from the tokenizer that was trained on"
            )
    if loaded.padding_side != "left" or loaded.pad_token != PAD or loaded.eos_token != EOS:
        raise RuntimeError(f"AutoTokenizer lost the padding side or special tokens of {output_dir}")


# --- model


def build_model(config: BaseConfig, tokenizer):
    """A tiny Llama-style causal LM with tied embeddings over the tokenizer's vocabulary.

    Llama, not Qwen2: transformers 5 maps a `qwen2` config.json to Qwen2Tokenizer whatever the
    tokenizer_config says, and that tokenizer drops the space token (field notes); `llama` has no
    registered tokenizer, so AutoTokenizer honours the saved tokenizer class.
    """
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(model_config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        max_new_tokens=config.max_position_embeddings // 2,
    )
    return model


# --- SFT


def sft_batch(
    examples: Sequence[SFTExample],
    rng: random.Random,
    batch_size: int,
    vocab: dict[str, int],
    eos_id: int,
    pad_id: int,
):
    """One batch: random examples, each row one `example.draw` (a completion drawn uniformly).

    Right-padded (positions start at 0 as in left-padded generation, whose position ids come from
    the attention mask); labels are -100 on the prompt and the padding. Returns three (batch, length)
    long tensors: input_ids, attention_mask, labels.
    """
    rows = []
    for example in (rng.choice(examples) for _ in range(batch_size)):
        prompt_text, completion_text = example.draw(rng)
        prompt = [vocab[c] for c in prompt_text]
        completion = [vocab[c] for c in completion_text] + [eos_id]
        rows.append((prompt + completion, [-100] * len(prompt) + completion))
    length = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((batch_size, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
    labels = torch.full((batch_size, length), -100, dtype=torch.long)
    for row, (ids, target_ids) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(ids)] = torch.tensor(target_ids)
    return input_ids, attention_mask, labels


def learning_rate_at(step: int, config: BaseConfig) -> float:
    """Linear warmup to the peak, then cosine decay to min_lr_ratio * peak at max_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return config.learning_rate * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


def train_sft(model, tokenizer, examples: Sequence[SFTExample], config: BaseConfig) -> list[float]:
    """Plain AdamW loop over freshly drawn batches; returns the loss of every step."""
    rng = random.Random(config.seed + 1)
    vocab = tokenizer.get_vocab()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.98)
    )
    model.train()
    losses = []
    started = time.perf_counter()
    for step in range(config.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config)
        input_ids, attention_mask, labels = sft_batch(
            examples, rng, config.batch_size, vocab, tokenizer.eos_token_id, tokenizer.pad_token_id
        )
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
        if config.log_every and ((step + 1) % config.log_every == 0 or step + 1 == config.max_steps):
            elapsed = time.perf_counter() - started
            print(f"step {step + 1}/{config.max_steps} loss {loss.item():.4f} ({elapsed:.0f} s)", flush=True)
    model.eval()
    return losses


# --- main


def write_generated_data(config: BaseConfig, generator_config: ArithConfig, task) -> ArithData:
    """Write the generator's probe set where the probe recipe reads it, then its RL set (the probe
    set, read back through the task, held out); returns the generator as the SFT source."""
    source = ArithData(generator_config, config.seed)
    write_data_file(task.config.data_path, source.probe_rows(), config.overwrite)
    if generator_config.arith_train_path:
        rows = source.train_rows(held_out=task.problems())
        write_data_file(generator_config.arith_train_path, rows, config.overwrite)
    return source


def main(config: BaseConfig, generator_config: ArithConfig | None = None) -> Path:
    """Build (or reuse) the base model in `config.output_dir`; returns the directory."""
    # --- config
    if not config.output_dir:
        raise ConfigError("BaseConfig.output_dir: required (--output_dir DIR)")
    output_dir = Path(config.output_dir)
    check_generator_config(config, generator_config)
    task_config = load_task_config(config.probe_recipe, config.data_generator)
    generator_config = generator_config or ArithConfig()
    resolved = resolve(config, task_config, generator_config)
    task = make_task(task_config)

    # --- data files: written (or checked) before the cache, so a reused base still finds them
    source = write_generated_data(config, generator_config, task) if config.data_generator else task
    if cached(output_dir, resolved, config.overwrite):
        print(
            f"base model in {output_dir} already built with this config "
            f"(fingerprint {fingerprint(resolved)}): reused"
        )
        return output_dir
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    record = {"fingerprint": fingerprint(resolved), "finished": False, **resolved}
    (output_dir / CONFIG_FILE).write_text(json.dumps(record, indent=2))
    started = time.perf_counter()

    # --- seed
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)

    # --- data: the probe set's problems are held out
    probe_problems = task.problems()
    examples = source.sft_examples(config.num_train_problems, config.seed, held_out=probe_problems)
    mean_solutions = sum(len(e.completions) for e in examples) / len(examples)
    print(
        f"{len(examples)} SFT problems ({len(probe_problems)} probe problems held out), "
        f"{mean_solutions:.1f} valid completions per problem on average "
        f"({time.perf_counter() - started:.0f} s)"
    )

    # --- model
    tokenizer = build_tokenizer(source.alphabet)
    model = build_model(config, tokenizer)
    print(f"Llama with {model.num_parameters():,} parameters")

    # --- SFT
    losses = train_sft(model, tokenizer, examples, config)

    # --- save (the config record is marked finished last: its flag = a complete directory)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    check_saved_tokenizer(output_dir, tokenizer, [examples[0].prompt + examples[0].completions[0]])
    seconds = time.perf_counter() - started
    record.update(
        finished=True,
        seconds=seconds,
        final_loss=losses[-1],
        parameters=model.num_parameters(),
        sft_problems=len(examples),
        mean_solutions=mean_solutions,
    )
    (output_dir / CONFIG_FILE).write_text(json.dumps(record, indent=2))
    print(f"base model written to {output_dir} in {seconds:.0f} s")
    return output_dir


def cli(args: Sequence[str] | None = None) -> int:
    """`python -m train.build_base` / `leash-base`: the exit status under probe.cli's convention."""
    return run_command("build_base", lambda: main(*parse((BaseConfig, ArithConfig), args)))


if __name__ == "__main__":
    sys.exit(cli())
