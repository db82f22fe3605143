"""Batched sampling with per-token entropy: transformers (CPU/GPU), and vLLM when installed.

HF backend, per problem:
- the prompt is run once (prefill, batch 1); its KV cache and last-position logits are shared
  by every sample of that problem, so no prompt token is recomputed per sample;
- beyond the prompt, the model runs once per distinct prefix of a chunk's up-to-`batch_size` rows,
  not once per row (rows that drew the same tokens so far share one cache entry; each row still
  draws its own next token): exact i.i.d. sampling, and with many samples of a peaked model far
  fewer forward rows than samples;
- all rows share one prompt, so there is no padding and no attention mask; a row that emits EOS
  leaves the batch, the chunk ends when no row is left or after `max_new_tokens` tokens;
- token entropy `H_t = -sum_v p_t(v) log p_t(v)` with `p_t = softmax(logits_t / T)` comes from the
  logits of this very pass, in float32, before top-p truncation (no second forward pass);
- randomness comes from one `torch.Generator` per problem, seeded from (seed, problem_id) by
  `problem_seed`, so a problem's samples do not depend on which process draws it or in what order.
  They do depend on `batch_size` (the chunking decides how the generator's draws are laid out).

HF backend, several problems per call (`sample_problems`, `ProbeConfig.problems_per_call`): the
prompts are left-padded into one prefill (attention mask, positions counted from each prompt's first
real token), then chunk `start` of every problem is decoded together, one forward per step over all
problems' distinct prefixes. Each problem keeps its own generator and its rows keep their order, so
each draws exactly the random numbers of the one-problem run. What changes: the logits come from
matrix products of another batch shape (and padded attention), so they differ from the one-problem
run's by float32 rounding (~1e-7 relative). The token entropies differ by that much; a sampled token
differs only if a uniform draw falls within that distance of a boundary of its CDF, which no test
seed has hit. The samples stay i.i.d. draws from the same model distribution either way.

Per sample: the generated ids (EOS included when emitted), the text (decoded without EOS/special
tokens), `length` = number of generated tokens, EOS included (each was sampled, so it counts in
the entropy mean too), `token_entropy` = mean of H_t over those tokens, `finished` = EOS emitted.

vLLM backend (`VLLMSampler`): chunked seeded requests, many problems per `generate` call; see its
docstring for how its samples are seeded and exactly what its entropy is.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


@dataclass
class SampleChunk:
    """Up to `batch_size` finished samples of one prompt."""

    token_ids: list[list[int]]  # generated ids per sample, EOS included when emitted
    texts: list[str]  # decoded completions, EOS and special tokens removed
    lengths: np.ndarray  # (samples,) int64, generated tokens incl. EOS
    token_entropy: np.ndarray  # (samples,) float64, mean H_t over the sample's tokens, nats
    finished: np.ndarray  # (samples,) bool, EOS emitted within max_new_tokens


# One probe job: (problem index, prompt ids, seed of that problem's samples).
Job = tuple[int, Sequence[int], int]


class Sampler(Protocol):
    """What the probe asks of a backend: `n` samples of one prompt, or of several problems at once,
    in chunks, reproducible per seed.

    `sample(prompt_ids, n, seed)` yields a prompt's SampleChunks in a fixed order for a seed.
    `sample_problems(jobs, n)` yields (problem index, chunk) pairs for every job, each problem's
    chunks in its own order (the order `sample` gives), problems possibly interleaved: a problem's
    samples do not depend on which other problems share the call.
    """

    entropy_source: str  # what SampleChunk.token_entropy is (summary.json reports it)
    model_dtype: str  # what the samples were computed in, e.g. "float32" (summary.json reports it)

    def sample(self, prompt_ids: Sequence[int], n: int, seed: int) -> Iterator[SampleChunk]: ...

    def sample_problems(self, jobs: Sequence[Job], n: int) -> Iterator[tuple[int, SampleChunk]]: ...


def problem_seed(seed: int, problem_id: str) -> int:
    """A 63-bit seed for one problem, independent of problem order, process and resume."""
    digest = hashlib.sha256(f"{seed}\x00{problem_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def entropy_from_logits(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, H) of softmax(logits / T): probs (rows, vocab) float32, H (rows,) nats."""
    log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)  # (rows, vocab)
    probs = log_probs.exp()
    # xlogy-style: where p == 0 (underflow), p * log p contributes exactly 0.
    entropy = -(probs * log_probs.clamp_min(torch.finfo(log_probs.dtype).min)).sum(-1)  # (rows,)
    return probs, entropy


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of most likely tokens whose mass reaches top_p (rows, vocab)."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # (rows, vocab)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs  # mass of strictly more likely tokens
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # the top token always stays
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)


def eos_token_ids(tokenizer, model=None) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS plus the model's generation_config EOS."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    generation_config = getattr(model, "generation_config", None)
    extra = getattr(generation_config, "eos_token_id", None)
    if extra is not None:
        ids.update(int(i) for i in (extra if isinstance(extra, (list, tuple)) else [extra]))
    return sorted(ids)


def forward_with_cache(model, input_ids: torch.Tensor, cache, **kwargs) -> tuple[object, torch.Tensor]:
    """One forward step with a KV cache: (cache, last-position logits (rows, vocab)).

    transformers 5.24 names the cache argument `cache` (earlier 5.x: `past_key_values`).
    """
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    if cache is None:
        cache = DynamicCache()
    out = model(input_ids=input_ids, use_cache=True, **{name: cache}, **kwargs)
    returned = out["cache"] if "cache" in out else out["past_key_values"]
    return returned, out.logits[:, -1]


def _paddable(model) -> bool:
    """Whether prompts can share a left-padded batch: every cache layer a plain DynamicLayer (a
    sliding-window layer would count the padding inside its window)."""
    probe_cache = DynamicCache(config=model.config)
    return all(type(layer) is DynamicLayer for layer in probe_cache.layers)


def left_padded(prompts: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts left-padded to the longest, (prompts, longest) ids, and the attention mask (1 = real).
    The padding id is 0: masked positions are never attended to, their ids do not matter."""
    longest = max(len(ids) for ids in prompts)
    ids = torch.zeros(len(prompts), longest, dtype=torch.long, device=device)
    mask = torch.zeros(len(prompts), longest, dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, longest - len(prompt) :] = 1
    return ids, mask


def decode_completions(tokenizer, token_ids: list[list[int]], finished: np.ndarray) -> list[str]:
    """Texts of completions (EOS dropped, special tokens skipped), decoding each distinct one once."""
    keys = [tuple(ids[:-1] if done else ids) for ids, done in zip(token_ids, finished, strict=True)]
    distinct = list(set(keys))
    decoded = dict(zip(distinct, tokenizer.batch_decode(distinct, skip_special_tokens=True), strict=True))
    return [decoded[key] for key in keys]


class HFSampler:
    """Samples `n` completions of one prompt in chunks, sharing the prompt's KV cache."""

    entropy_source = "full_softmax_at_temperature_before_top_p"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        batch_size: int,
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.top_p = temperature, top_p
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.device = next(model.parameters()).device
        self.model_dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.eos = torch.tensor(eos_token_ids(tokenizer, model), device=self.device, dtype=torch.long)

    @torch.inference_mode()
    def sample(self, prompt_ids: Sequence[int], n: int, seed: int) -> Iterator[SampleChunk]:
        """Yield chunks of finished samples, `n` in all, in a fixed order for a given seed."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        prompt = torch.tensor([list(prompt_ids)], device=self.device, dtype=torch.long)  # (1, prompt)
        prompt_cache, prompt_logits = forward_with_cache(self.model, prompt, None, logits_to_keep=1)
        for start in range(0, n, self.batch_size):
            rows = min(self.batch_size, n - start)
            (chunk,) = self._decode(copy.deepcopy(prompt_cache), prompt_logits, [rows], [generator])
            yield chunk

    @torch.inference_mode()
    def sample_problems(self, jobs: Sequence[Job], n: int) -> Iterator[tuple[int, SampleChunk]]:
        """Chunk `start` of every job decoded together, one forward per step for all their states.

        Each prompt is still prefilled alone (batch 1) and each problem draws from its own generator,
        its rows in its own order, so a problem's tokens are those `sample` gives (see `_decode`).
        """
        if len(jobs) == 1 or not _paddable(self.model):
            for index, prompt_ids, seed in jobs:
                for chunk in self.sample(prompt_ids, n, seed):
                    yield index, chunk
            return
        generators = [torch.Generator(device=self.device).manual_seed(seed) for _, _, seed in jobs]
        lengths = [len(prompt_ids) for _, prompt_ids, _ in jobs]
        prompts, mask = left_padded([list(prompt_ids) for _, prompt_ids, _ in jobs], self.device)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)  # (prompts, longest): padding sits at 0
        prompt_cache, prompt_logits = forward_with_cache(
            self.model, prompts, None, attention_mask=mask, position_ids=positions, logits_to_keep=1
        )
        for start in range(0, n, self.batch_size):
            rows = min(self.batch_size, n - start)
            chunks = self._decode(
                copy.deepcopy(prompt_cache),
                prompt_logits,
                [rows] * len(jobs),
                generators,
                mask=mask,
                prompt_lengths=lengths,
            )
            for (index, _, _), chunk in zip(jobs, chunks, strict=True):
                yield index, chunk

    def _decode(
        self,
        cache,
        logits: torch.Tensor,
        rows: list[int],
        generators: list[torch.Generator],
        *,
        mask: torch.Tensor | None = None,
        prompt_lengths: list[int] | None = None,
    ) -> list[SampleChunk]:
        """Sample `rows[p]` completions of each problem p; the model runs once per distinct prefix.

        Rows with the same prefix have the same next-token distribution, so the cache holds one
        entry per distinct prefix (a *state*) and each row samples on its own from its state's
        distribution: exactly i.i.d. sampling, with the generator's draws laid out as if every row
        had its own forward pass. `cache`/`logits` start as one state per problem (its prompt). Rows
        are kept grouped by problem, in row order, and problem p's rows draw with `generators[p]` in
        one call per step, the call the one-problem run makes. Several problems: the prompts are
        left-padded to one length; `mask` (states, cache length) marks the real positions and each
        state's token goes in at position prompt length + step.
        """
        device, vocab = self.device, logits.shape[-1]
        total = sum(rows)
        tokens = torch.full((total, self.max_new_tokens), -1, dtype=torch.long, device=device)
        entropy_sum = torch.zeros(total, dtype=torch.float64, device=device)
        lengths = torch.zeros(total, dtype=torch.long, device=device)
        finished = torch.zeros(total, dtype=torch.bool, device=device)
        active = torch.arange(total, device=device)  # rows still generating, grouped by problem
        row_problem = torch.repeat_interleave(torch.arange(len(rows), device=device), torch.tensor(rows))
        row_state = row_problem.clone()  # (active,) -> state index; state p is problem p's prompt
        state_problem = torch.arange(len(rows), device=device)  # (states,) -> problem
        for step in range(self.max_new_tokens):
            probs, entropy = entropy_from_logits(logits, self.temperature)  # (states, vocab), (states,)
            row_probs = top_p_filter(probs, self.top_p)[row_state]  # (active, vocab)
            counts = torch.bincount(row_problem, minlength=len(rows)).tolist()  # active rows per problem
            pieces, first = [], 0
            for generator, count in zip(generators, counts, strict=True):
                if count:
                    drawn = torch.multinomial(row_probs[first : first + count], 1, generator=generator)
                    pieces.append(drawn[:, 0])
                first += count
            next_tokens = torch.cat(pieces)  # (active,)
            tokens[active, step] = next_tokens
            entropy_sum[active] += entropy.double()[row_state]
            lengths[active] += 1
            done = torch.isin(next_tokens, self.eos)  # (active,)
            finished[active[done]] = True
            if done.all() or step == self.max_new_tokens - 1:
                break
            keep = (~done).nonzero()[:, 0]
            active, row_state, next_tokens = active[keep], row_state[keep], next_tokens[keep]
            row_problem = row_problem[keep]
            # the next states: distinct (state, token) pairs among the running rows
            children, row_state = torch.unique(row_state * vocab + next_tokens, return_inverse=True)
            parents = children // vocab
            cache.batch_select_indices(parents)
            state_problem = state_problem[parents]
            if mask is None:
                cache, logits = forward_with_cache(self.model, (children % vocab)[:, None], cache)
                continue
            mask = torch.cat([mask[parents], mask.new_ones(len(parents), 1)], dim=1)
            position = torch.tensor(prompt_lengths, device=device)[state_problem] + step  # (states,)
            cache, logits = forward_with_cache(
                self.model,
                (children % vocab)[:, None],
                cache,
                attention_mask=mask,
                position_ids=position[:, None],
            )
        bounds = np.cumsum([0, *rows])
        return [
            self._chunk(tokens[a:b], lengths[a:b], entropy_sum[a:b], finished[a:b])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def _chunk(self, tokens, lengths, entropy_sum, finished) -> SampleChunk:
        lengths_np = lengths.cpu().numpy().astype(np.int64)
        finished_np = finished.cpu().numpy()
        rows = tokens.cpu().tolist()
        token_ids = [row[:length] for row, length in zip(rows, lengths_np.tolist(), strict=True)]
        texts = decode_completions(self.tokenizer, token_ids, finished_np)
        mean_entropy = (entropy_sum.cpu().numpy() / np.maximum(lengths_np, 1)).astype(np.float64)
        return SampleChunk(token_ids, texts, lengths_np, mean_entropy, finished_np)


class VLLMSampler:
    """vLLM backend: chunked, seeded requests, many problems per `generate` call.

    Requests: each problem's `n` samples go out as requests of at most `batch_size` samples; chunk
    `start` of a problem has seed `seed + start`, and vLLM seeds a request's sample i with its seed
    + i, so sample j of a problem is drawn with seed `seed + j` whatever the chunking. A chunk is
    reduced to token ids, texts, lengths and entropies before the next call, so host memory holds at
    most (problems per call) x `batch_size` samples, not `n`. Texts are decoded here, once per
    distinct completion, as in the HF backend (vLLM's detokenizer is off: it would also decode every
    returned logprob's token).

    Entropy: vLLM returns, per generated position, only the top-`num_logprobs` log-probabilities
    (at most the engine's `max_logprobs`, 20 by default), plus the sampled token's when it is outside
    them, not the full distribution. With `logprobs_mode="processed_logprobs"` (set by
    `probe.models.make_vllm_engine`, and by TRL for its colocated engine) they are taken after temperature
    scaling (and after top-p when top_p < 1). The figure reported is a *truncated estimate*: the
    entropy of those probabilities renormalised to sum to 1, which is below the full-vocabulary
    entropy by the tail it leaves out (exact when `num_logprobs` >= the vocabulary) and, for
    top_p < 1, follows the truncated distribution, unlike the HF backend.
    """

    entropy_source = "vllm_top_logprobs_renormalised"

    def __init__(self, llm, tokenizer, *, temperature, top_p, max_new_tokens, batch_size, num_logprobs=20):
        # why: vllm is an optional, heavy dependency; importing it here fails early, not mid-run
        from vllm import SamplingParams  # noqa: F401

        limit = llm.llm_engine.model_config.max_logprobs
        if limit != -1 and num_logprobs > limit:
            raise ValueError(
                f"num_logprobs = {num_logprobs} is above the engine's max_logprobs = {limit} "
                "(make_vllm_engine(max_logprobs=...); TRL's colocated engine keeps vLLM's default 20)"
            )
        self.llm, self.tokenizer = llm, tokenizer
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens
        self.batch_size, self.num_logprobs = batch_size, num_logprobs
        self.model_dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")

    def sample(self, prompt_ids: Sequence[int], n: int, seed: int) -> Iterator[SampleChunk]:
        for _, chunk in self.sample_problems([(0, prompt_ids, seed)], n):
            yield chunk

    def sample_problems(self, jobs: Sequence[Job], n: int) -> Iterator[tuple[int, SampleChunk]]:
        """One `generate` call per round of `batch_size` samples of every job, in job order."""
        # why: vllm is an optional, heavy dependency
        from vllm import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(prompt_ids)) for _, prompt_ids, _ in jobs]
        for start in range(0, n, self.batch_size):
            rows = min(self.batch_size, n - start)
            params = [self._params(rows, seed + start) for _, _, seed in jobs]
            requests = self.llm.generate(prompts, params, use_tqdm=False)
            for (index, _, _), request in zip(jobs, requests, strict=True):
                yield index, self._chunk(request.outputs)

    def _params(self, rows: int, seed: int):
        # why: vllm is an optional, heavy dependency
        from vllm import SamplingParams

        return SamplingParams(
            n=rows,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_new_tokens,
            # problem_seed is < 2**63; the chunk offset and vLLM's "+ i" per sample must stay in int64
            seed=seed % 2**62,
            logprobs=self.num_logprobs,
            flat_logprobs=True,  # a few flat lists per sample instead of a dict of objects per token
            detokenize=False,
        )

    def _chunk(self, outputs) -> SampleChunk:
        token_ids = [list(output.token_ids) for output in outputs]
        finished = np.array([output.finish_reason == "stop" for output in outputs], dtype=bool)
        entropies = [mean_truncated_entropy(output.logprobs, self.num_logprobs) for output in outputs]
        return SampleChunk(
            token_ids,
            decode_completions(self.tokenizer, token_ids, finished),
            np.array([len(ids) for ids in token_ids], np.int64),
            np.array(entropies, np.float64),
            finished,
        )


def mean_truncated_entropy(logprobs, num_logprobs: int) -> float:
    """Mean over positions of `truncated_entropy` of one sample's vLLM FlatLogprobs.

    Each position holds the sampled token's entry first (rank r), then the top-`num_logprobs`
    (ranks 1..K); when r <= K the sampled token is among them, so its first entry is a duplicate
    and is dropped.
    """
    if logprobs is None or len(logprobs.start_indices) == 0:
        return 0.0
    width = num_logprobs + 1
    values = np.asarray(logprobs.logprobs, dtype=np.float64)
    starts = np.asarray(logprobs.start_indices)
    if values.size != width * len(starts) or np.any(np.diff(starts) != width):
        raise RuntimeError(
            f"vLLM returned {values.size} logprobs for {len(starts)} positions, not {width} each"
        )
    values = values.reshape(len(starts), width)  # (positions, 1 + K)
    sampled_rank = np.asarray(logprobs.ranks[::width], dtype=np.float64)  # (positions,)
    values[sampled_rank <= num_logprobs, 0] = -np.inf  # a duplicate of one of the top K
    finite = np.isfinite(values)
    peak = np.where(finite, values, -np.inf).max(axis=1, keepdims=True)  # (positions, 1)
    weights = np.where(finite, np.exp(values - peak), 0.0)
    q = weights / weights.sum(axis=1, keepdims=True)  # renormalised probabilities
    log_q = np.log(np.where(q > 0, q, 1.0))
    return float((-(q * log_q).sum(axis=1)).mean())


def truncated_entropy(logprobs: Sequence[float]) -> float:
    """Entropy (nats) of a few log-probabilities renormalised to sum to 1."""
    values = np.asarray(logprobs, dtype=np.float64)  # (top_k,)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    log_q = values - np.logaddexp.reduce(values)
    return float(-(np.exp(log_q) * log_q).sum())
