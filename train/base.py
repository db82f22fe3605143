"""Build the embedded base model: a char-level tokenizer, a tiny Llama-style LM and SFT on countdown.

`python -m train.base --config configs/base/countdown_tiny.yaml --output_dir DIR`

Every SFT example is a countdown problem drawn like the probe set's (same count of numbers,
value and target ranges, operators) whose target text is drawn uniformly among *all* valid
expressions over its numbers, so the model learns to sample many distinct correct answers (the
breadth that RLVR later narrows). Problems whose `countdown_key` is in the probe set are held
out. DIR is cached: it holds the resolved config and its fingerprint; the same config reuses it,
a different one is refused unless `--overwrite`.
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
from functools import lru_cache
from pathlib import Path

import yaml

from probe.cli import ConfigError, check_types, parse
from probe.tasks import TaskConfig, countdown_key, countdown_prompt, make_task

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
# The compact countdown alphabet: every prompt and completion character is one token.
ALPHABET = list("0123456789+-*/() =:")
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


def load_task_config(probe_recipe: str | Path) -> TaskConfig:
    """The TaskConfig of a probe recipe: its task keys only (the sampling keys belong to the probe)."""
    path = Path(probe_recipe)
    if not path.is_file():
        raise ConfigError(f"BaseConfig.probe_recipe: no such file {str(path)!r}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"BaseConfig.probe_recipe: {str(path)!r} is not a mapping")
    names = {f.name for f in dataclasses.fields(TaskConfig) if f.init}
    task_config = TaskConfig(**{key: value for key, value in values.items() if key in names})
    check_types(task_config)
    if task_config.task != "countdown":
        raise ConfigError(
            f"BaseConfig.probe_recipe: the base model needs task countdown, got {task_config.task!r}"
        )
    return task_config


def resolve(config: BaseConfig, task_config: TaskConfig) -> dict:
    """What decides the build: the base config (less where/whether to write and how to run) and the task."""
    not_deciding = ("output_dir", "overwrite", "log_every", "num_threads")
    base = {k: v for k, v in dataclasses.asdict(config).items() if k not in not_deciding}
    return {"base": base, "task": dataclasses.asdict(task_config)}


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


# --- countdown solutions


def _combine(left: list, right: list, operators: tuple[str, ...]) -> list:
    """Every `left op right` over two expression lists, in left-associative normal form.

    An expression is (numerator, denominator, kind, text); kind "atom" | "add" (+ -) | "mul" (* /).
    A right operand of the operator's own precedence is skipped (`a+(b-c)` is written `a+b-c`), so
    each text names one tree and carries only the parentheses it needs.
    """
    out = []
    for ln, ld, lk, ls in left:
        for rn, rd, rk, rs in right:
            for op in operators:
                if op in "+-":
                    if rk == "add":
                        continue
                    numerator = ln * rd + rn * ld if op == "+" else ln * rd - rn * ld
                    out.append((numerator, ld * rd, "add", f"{ls}{op}{rs}"))
                    continue
                if rk == "mul" or (op == "/" and rn == 0):
                    continue
                left_text = f"({ls})" if lk == "add" else ls
                right_text = f"({rs})" if rk == "add" else rs
                numerator, denominator = (ln * rn, ld * rd) if op == "*" else (ln * rd, ld * rn)
                out.append((numerator, denominator, "mul", f"{left_text}{op}{right_text}"))
    return out


@lru_cache(maxsize=4096)
def _expressions(numbers: tuple[int, ...], operators: tuple[str, ...]) -> list:
    """All expressions using each of the sorted `numbers` exactly once (exact rationals, unreduced)."""
    if len(numbers) == 1:
        return [(numbers[0], 1, "atom", str(numbers[0]))]
    out, seen = [], set()
    for mask in range(1, (1 << len(numbers)) - 1):
        left = tuple(x for i, x in enumerate(numbers) if mask >> i & 1)
        if left in seen:  # repeated numbers give the same split more than once
            continue
        seen.add(left)
        right = tuple(x for i, x in enumerate(numbers) if not mask >> i & 1)
        out.extend(_combine(_expressions(left, operators), _expressions(right, operators), operators))
    return out


def countdown_solutions(numbers: Sequence[int], target: int, operators: Sequence[str]) -> list[str]:
    """Every distinct expression text over `numbers` (each once) whose exact value is `target`, sorted."""
    found = {
        text
        for numerator, denominator, _, text in _expressions(tuple(sorted(numbers)), tuple(operators))
        if numerator == target * denominator
    }
    return sorted(found)


# --- SFT problems


def sample_countdown_problem(rng: random.Random, task: TaskConfig) -> tuple[list[int], int]:
    """One problem drawn the way reasoning-gym's countdown generator draws them.

    Numbers uniform in [min_value, max_value]; a left-to-right chain of random operators whose
    value is the target (division only where it divides the running value, else subtraction);
    retried until the target is in [min_target, max_target]; numbers shuffled. Plain integers,
    no sympy, so tens of thousands take well under a second.
    """
    count = rng.randint(task.min_numbers, task.max_numbers)
    for _ in range(1000):
        numbers = [rng.randint(task.min_value, task.max_value) for _ in range(count)]
        value = numbers[0]
        for i in range(1, count):
            op = rng.choice(task.operators)
            if op == "/":
                remaining = [x for x in numbers[i:] if x != 0]
                rng.shuffle(remaining)
                divisor = next((x for x in remaining if value % x == 0), None)
                if divisor is None:
                    op = "-"
                else:
                    numbers[i] = divisor
                    value //= divisor
                    continue
            value = (
                value + numbers[i] if op == "+" else value - numbers[i] if op == "-" else value * numbers[i]
            )
        if task.min_target <= value <= task.max_target:
            rng.shuffle(numbers)
            return numbers, value
    raise ConfigError(
        f"no countdown problem with a target in [{task.min_target}, {task.max_target}] after 1000 draws: "
        "widen the target range of the probe recipe"
    )


def make_sft_problems(
    task: TaskConfig, count: int, seed: int, held_out: set
) -> list[tuple[list[int], int, list[str]]]:
    """`count` problems (numbers, target, every valid expression) none of whose keys is in `held_out`."""
    rng = random.Random(seed)
    problems = []
    while len(problems) < count:
        numbers, target = sample_countdown_problem(rng, task)
        if countdown_key(numbers, target) in held_out:
            continue
        solutions = countdown_solutions(numbers, target, task.operators)
        if not solutions:  # cannot happen for a chain-built target; kept as a loud check
            raise RuntimeError(f"no expression found for {numbers} = {target}")
        problems.append((numbers, target, solutions))
    return problems


# --- tokenizer


def build_tokenizer():
    """Char-level WordLevel tokenizer over the countdown alphabet, as a PreTrainedTokenizerFast.

    Every character is its own token (space included); pad/eos/unk specials; left padding for
    generation. transformers 5 saves it as `TokenizersBackend` (its PreTrainedTokenizerFast);
    `check_saved_tokenizer` makes sure AutoTokenizer gives it back with identical ids.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([PAD, EOS, UNK, *ALPHABET])}
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
    from transformers import AutoTokenizer

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
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

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
    problems: list, rng: random.Random, batch_size: int, vocab: dict[str, int], eos_id: int, pad_id: int
):
    """One batch: random problems, each with a target text drawn uniformly among its expressions.

    Right-padded (positions start at 0 as in left-padded generation, whose position ids come from
    the attention mask); labels are -100 on the prompt and the padding. Returns three (batch, length)
    long tensors: input_ids, attention_mask, labels.
    """
    import torch

    rows = []
    for numbers, target, solutions in (rng.choice(problems) for _ in range(batch_size)):
        order = list(numbers)
        rng.shuffle(order)  # the probe shows numbers in any order
        prompt = [vocab[c] for c in countdown_prompt(order, target)]
        completion = [vocab[c] for c in rng.choice(solutions)] + [eos_id]
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


def train_sft(model, tokenizer, problems: list, config: BaseConfig) -> list[float]:
    """Plain AdamW loop over freshly drawn batches; returns the loss of every step."""
    import torch

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
            problems, rng, config.batch_size, vocab, tokenizer.eos_token_id, tokenizer.pad_token_id
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


def main(config: BaseConfig) -> Path:
    """Build (or reuse) the base model in `config.output_dir`; returns the directory."""
    import torch

    # --- config
    if not config.output_dir:
        raise ConfigError("BaseConfig.output_dir: required (--output_dir DIR)")
    output_dir = Path(config.output_dir)
    task_config = load_task_config(config.probe_recipe)
    resolved = resolve(config, task_config)
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

    # --- data: probe problems are held out by key
    held_out = {
        countdown_key(p.fields["numbers"], p.fields["target"]) for p in make_task(task_config).problems()
    }
    problems = make_sft_problems(task_config, config.num_train_problems, config.seed, held_out)
    mean_solutions = sum(len(s) for *_, s in problems) / len(problems)
    print(
        f"{len(problems)} SFT problems ({len(held_out)} probe keys held out), "
        f"{mean_solutions:.1f} valid expressions per problem on average "
        f"({time.perf_counter() - started:.0f} s)"
    )

    # --- model
    tokenizer = build_tokenizer()
    model = build_model(config, tokenizer)
    print(f"Llama with {model.num_parameters():,} parameters")

    # --- SFT
    losses = train_sft(model, tokenizer, problems, config)

    # --- save (the config record is marked finished last: its flag = a complete directory)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    numbers, target, solutions = problems[0]
    check_saved_tokenizer(output_dir, tokenizer, [countdown_prompt(numbers, target) + solutions[0]])
    seconds = time.perf_counter() - started
    record.update(
        finished=True,
        seconds=seconds,
        final_loss=losses[-1],
        parameters=model.num_parameters(),
        sft_problems=len(problems),
        mean_solutions=mean_solutions,
    )
    (output_dir / CONFIG_FILE).write_text(json.dumps(record, indent=2))
    print(f"base model written to {output_dir} in {seconds:.0f} s")
    return output_dir


def cli(args: Sequence[str] | None = None) -> None:
    try:
        (config,) = parse((BaseConfig,), args)
        main(config)
    except ConfigError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    cli()
