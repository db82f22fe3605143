"""`python -m probe ppl`: perplexity of external traces under a model (metric spec, "Perplexity").

Per trace: `exp(mean over trace tokens of -log p(token | prompt, earlier trace tokens))` at
temperature 1, prompt tokens excluded. The prompt is encoded exactly as the probe encodes it
(`probe.models.encode_prompt`), the trace is tokenized on its own (no special tokens, no EOS added)
and appended, so trace tokens are what the model would have had to sample after that prompt.

Input: a jsonl file of {"problem_id", "trace"} (optionally "prompt"; otherwise the prompt of that
problem in the probe set the task config builds). Output: OUT/ppl.parquet (problem_id,
trace_index, ppl, num_tokens) and OUT/ppl_summary.json (mean ppl per problem, overall, and by
P/E/S/O class of the problem when `--compare REF_PROBE_DIR CAND_PROBE_DIR` is given).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from probe.cli import ConfigError, parse
from probe.config import SAMPLING_KEYS
from probe.files import check_output_dir
from probe.metrics import SUPPORT_CLASSES, classes_by_problem
from probe.models import encode_prompt, load_model
from probe.store import load_problems, write_ppl
from probe.tasks import SuiteConfig, TaskConfig, make_suite, suite_sections

logger = logging.getLogger(__name__)


@dataclass
class PplArguments:
    """Traces to score and where the results go."""

    model: str = field(default="", metadata={"help": "Checkpoint directory scoring the traces."})
    traces: str = field(default="", metadata={"help": 'jsonl of {"problem_id", "trace"[, "prompt"]}.'})
    output_dir: str = field(default="", metadata={"help": "Where ppl.parquet and ppl_summary.json go."})
    compare: list[str] = field(
        default_factory=list,
        metadata={"help": "REF_PROBE_DIR CAND_PROBE_DIR: group problems by their P/E/S/O class."},
    )
    batch_size: int = field(default=16, metadata={"help": "Traces per forward pass."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto | float32 | bfloat16 | float16."})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when available) | cpu | cuda."})


def read_traces(path: str) -> list[dict]:
    """The jsonl lines; ConfigError names the line that is malformed."""
    if not Path(path).is_file():
        raise ConfigError(f"PplArguments.traces: {path!r} is not a file")
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})"
        ) from None
    traces = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{number}: not JSON ({error})") from None
        if not isinstance(item, dict) or not isinstance(item.get("trace"), str) or "problem_id" not in item:
            raise ConfigError(f'{path}:{number}: need {{"problem_id": ..., "trace": str}}')
        for key in ("problem_id", "prompt"):
            if key in item and not isinstance(item[key], str):
                raise ConfigError(
                    f"{path}:{number}: {key} must be a string, got {item[key]!r} ({type(item[key]).__name__})"
                )
        traces.append(item)
    if not traces:
        raise ConfigError(f"PplArguments.traces: {path} holds no traces")
    return traces


@torch.inference_mode()
def trace_nll(
    model, sequences: list[tuple[list[int], list[int]]], batch_size: int
) -> list[tuple[float, int]]:
    """(sum of -log p over trace tokens, trace token count) per (prompt ids, trace ids) pair."""
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        length = max(len(p) + len(t) for p, t in batch)
        ids = torch.zeros(len(batch), length, dtype=torch.long)  # right padding: positions stay 0..L-1
        mask = torch.zeros(len(batch), length, dtype=torch.long)
        for row, (prompt, trace) in enumerate(batch):
            ids[row, : len(prompt) + len(trace)] = torch.tensor(prompt + trace)
            mask[row, : len(prompt) + len(trace)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()  # (b, L, V)
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)  # (b, L-1, V): predicts token t+1
        token_log_probs = log_probs.gather(-1, ids[:, 1:, None].to(device))[..., 0].cpu()  # (b, L-1)
        for row, (prompt, trace) in enumerate(batch):
            picked = token_log_probs[row, len(prompt) - 1 : len(prompt) + len(trace) - 1]  # (trace,)
            results.append((float(-picked.double().sum()), len(trace)))
    return results


def support_class_by_problem(ref_dir: str, cand_dir: str) -> dict[str, str]:
    """problem_id -> P | E | S | O from two probe dirs (solved = c >= 1), on their common problems; a
    dir without a readable problems.parquet is refused (ProbeDirError)."""
    return classes_by_problem(load_problems(ref_dir), load_problems(cand_dir))


def summarize_ppl(rows: list[dict], classes: dict[str, str] | None) -> dict:
    """Mean ppl per problem, the mean over problems, and per class the mean over its problems."""
    per_problem: dict[str, list[float]] = {}
    for row in rows:
        per_problem.setdefault(row["problem_id"], []).append(row["ppl"])
    problem_means = {pid: float(np.mean(values)) for pid, values in per_problem.items()}
    summary: dict = {
        "num_traces": len(rows),
        "num_problems": len(problem_means),
        "mean_ppl": float(np.mean(list(problem_means.values()))),
        "per_problem": problem_means,
    }
    if classes is not None:
        by_class = {}
        for name in SUPPORT_CLASSES:
            values = [m for pid, m in problem_means.items() if classes.get(pid) == name]
            by_class[name] = {
                "num_problems": len(values),
                "mean_ppl": float(np.mean(values)) if values else None,
            }
        by_class["unclassified"] = sorted(pid for pid in problem_means if pid not in classes)
        summary["by_class"] = by_class
    return summary


def main(task_config: TaskConfig, suite_config: SuiteConfig, args: PplArguments) -> dict:
    """Score the traces, write ppl.parquet and ppl_summary.json, return the summary."""
    # --- config
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.output_dir:
        raise ConfigError("PplArguments.output_dir: required (--output_dir OUT)")
    if args.compare and len(args.compare) != 2:
        raise ConfigError(f"PplArguments.compare: need REF_PROBE_DIR CAND_PROBE_DIR, got {args.compare}")
    if args.batch_size < 1:
        raise ConfigError(f"PplArguments.batch_size must be >= 1, got {args.batch_size}")
    check_output_dir(args.output_dir)
    traces = read_traces(args.traces)
    classes = support_class_by_problem(*args.compare) if args.compare else None
    # --- prompts (and each one's format: a suite's domains may differ)
    prompts = _prompts(suite_sections(task_config, suite_config), traces)
    # --- model
    model, tokenizer = load_model(args.model, args.dtype, args.device)
    # --- tokens: what cannot be scored faithfully is counted, never passed over in silence
    pairs, counters = [], {}
    for item in traces:
        index = counters[item["problem_id"]] = counters.get(item["problem_id"], -1) + 1
        prompt_ids = encode_prompt(tokenizer, *prompts[item["problem_id"]])
        pairs.append((index, prompt_ids, tokenizer(item["trace"], add_special_tokens=False)["input_ids"]))
    empty = [i for i, (_, _, trace) in enumerate(pairs) if not trace]
    if empty:
        raise ConfigError(f"PplArguments.traces: traces {empty[:5]} have no tokens")
    warnings, not_scored, scored = token_warnings(traces, pairs, tokenizer, model)
    if not scored:
        raise ConfigError(
            f"PplArguments.traces: every trace is longer than the model's context "
            f"({warnings['context_length']} positions): nothing to score"
        )
    # --- score
    rows = []
    nll = trace_nll(model, [(prompt, trace) for _, (_, prompt, trace) in scored], args.batch_size)
    for (item, (index, _, _)), (total, count) in zip(scored, nll, strict=True):
        rows.append(
            {
                "problem_id": item["problem_id"],
                "trace_index": index,
                "ppl": math.exp(total / count),
                "num_tokens": count,
            }
        )
    # --- save
    summary = {**summarize_ppl(rows, classes), "warnings": warnings, "not_scored": not_scored}
    return _save(Path(args.output_dir), rows, summary, args)


def token_warnings(traces: list[dict], pairs: list[tuple], tokenizer, model) -> tuple[dict, list, list]:
    """(counts for ppl_summary.json, the traces left unscored, the (trace, pair) to score).

    A trace holding characters the tokenizer maps to its unknown token is scored (as those tokens) and
    counted; one that does not fit the model's context (prompt + trace > max_position_embeddings) is
    not scored: positions the model never saw would measure something else. Both are logged.
    """
    unknown = getattr(tokenizer, "unk_token_id", None)
    context = getattr(model.config, "max_position_embeddings", None)
    per_trace = [
        sum(token == unknown for token in trace) if unknown is not None else 0 for _, _, trace in pairs
    ]
    scored, not_scored = [], []
    for item, pair in zip(traces, pairs, strict=True):
        index, prompt, trace = pair
        if context is not None and len(prompt) + len(trace) > context:
            not_scored.append(
                {"problem_id": item["problem_id"], "trace_index": index, "tokens": len(prompt) + len(trace)}
            )
        else:
            scored.append((item, pair))
    warnings = {
        "traces_with_unknown_tokens": sum(count > 0 for count in per_trace),
        "unknown_tokens": sum(per_trace),
        "traces_beyond_context": len(not_scored),
        "context_length": context,
    }
    if warnings["unknown_tokens"]:
        logger.warning(
            "%d trace(s) hold %d token(s) the tokenizer maps to %s (characters outside its vocabulary): "
            "scored with those tokens; counted in ppl_summary.json",
            warnings["traces_with_unknown_tokens"],
            warnings["unknown_tokens"],
            tokenizer.unk_token,
        )
    if not_scored:
        logger.warning(
            "%d trace(s) longer than the model's context (%d positions): not scored; listed in "
            "ppl_summary.json under not_scored",
            len(not_scored),
            context,
        )
    return warnings, not_scored, scored


def _prompts(sections: dict, traces: list[dict]) -> dict[str, tuple[str, str]]:
    """problem_id -> (prompt, prompt_format): the trace's own prompt (in the format of its problem's
    domain, else the first domain's), else its problem's prompt in the probe set."""
    given = {item["problem_id"]: item["prompt"] for item in traces if isinstance(item.get("prompt"), str)}
    missing = {item["problem_id"] for item in traces} - given.keys()
    first_format = next(iter(sections.values())).prompt_format
    known: dict[str, tuple[str, str]] = {}
    if missing or len(sections) > 1:
        suite = make_suite(sections)
        known = {p.problem_id: (p.prompt, suite.task_of(p).config.prompt_format) for p in suite.problems()}
        suite.close()
    unknown = sorted(missing - known.keys())
    if unknown:
        raise ConfigError(
            f"traces name problems that are not in the probe set and give no prompt: {unknown[:5]}"
        )
    prompts = {pid: (prompt, known.get(pid, (None, first_format))[1]) for pid, prompt in given.items()}
    prompts.update({pid: known[pid] for pid in missing})
    return prompts


def _save(out: Path, rows: list[dict], summary: dict, args: PplArguments) -> dict:
    summary = {**summary, "model": args.model, "traces": args.traces, "compare": args.compare}
    write_ppl(out, rows, summary)
    counts = f"{summary['num_traces']} traces, {summary['num_problems']} problems"
    print(f"{counts}: mean ppl {summary['mean_ppl']:.4g}")
    for name, group in summary.get("by_class", {}).items():
        if name != "unclassified":
            shown = "undefined" if group["mean_ppl"] is None else f"{group['mean_ppl']:.4g}"
            print(f"  {name}: {group['num_problems']} problems, mean ppl {shown}")
    return summary


def command(argv: Sequence[str]) -> dict:
    """`python -m probe ppl --model DIR --traces FILE --output_dir OUT [--config PROBE_RECIPE]`: parse,
    then main. A probe recipe works here too: its sampling section (ProbeConfig) does not apply."""
    return main(*parse((TaskConfig, SuiteConfig, PplArguments), argv, recipe_ignores=SAMPLING_KEYS))
