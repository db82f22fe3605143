"""probe.sampling: entropy from the sampling pass, seeding, the shared prompt cache, stopping."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_lm import char_tokenizer, random_model

from probe.sampling import (
    HFSampler,
    entropy_from_logits,
    mean_truncated_entropy,
    problem_seed,
    top_p_filter,
    truncated_entropy,
)

PROMPT = "3 5 7 2=24:"


@pytest.fixture(scope="module")
def lm():
    tokenizer = char_tokenizer()
    return random_model(tokenizer), tokenizer


def _sampler(lm, **overrides):
    model, tokenizer = lm
    settings = dict(temperature=1.0, top_p=1.0, max_new_tokens=12, batch_size=16) | overrides
    return HFSampler(model, tokenizer, **settings)


def _prompt_ids(tokenizer):
    return tokenizer(PROMPT, add_special_tokens=False)["input_ids"]


def _draw(sampler, ids, n, seed):
    return list(sampler.sample(ids, n, seed))


# --- pure pieces, by hand


def test_entropy_of_uniform_logits_is_log_vocab():
    _, entropy = entropy_from_logits(torch.zeros(2, 4), temperature=0.7)
    np.testing.assert_allclose(entropy.numpy(), [math.log(4)] * 2, rtol=1e-6)


def test_entropy_uses_the_sampling_temperature():
    # logits (0, ln 3) at T = 1: p = (1/4, 3/4); at T = 2: p ∝ (1, sqrt 3)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    _, h1 = entropy_from_logits(logits, 1.0)
    _, h2 = entropy_from_logits(logits, 2.0)
    p = 1 / (1 + math.sqrt(3))
    np.testing.assert_allclose(h1.item(), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rtol=1e-6)
    np.testing.assert_allclose(h2.item(), -(p * math.log(p) + (1 - p) * math.log(1 - p)), rtol=1e-6)


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]], dtype=torch.float64)
    # sorted 0.5, 0.3, 0.15, 0.05: mass before each = 0, 0.5, 0.8, 0.95
    assert top_p_filter(probs, 0.7).tolist() == [[0.0, 0.5, 0.0, 0.3]]
    assert top_p_filter(probs, 0.8).tolist() == [[0.0, 0.5, 0.0, 0.3]]
    assert top_p_filter(probs, 0.81).tolist() == [[0.15, 0.5, 0.0, 0.3]]
    assert top_p_filter(probs, 0.01).tolist() == [[0.0, 0.5, 0.0, 0.0]]
    assert top_p_filter(probs, 1.0) is probs


def test_truncated_entropy_renormalises_the_given_logprobs():
    assert truncated_entropy([math.log(0.25), math.log(0.25)]) == pytest.approx(math.log(2), rel=1e-12)
    assert truncated_entropy([0.0, -math.inf]) == 0.0


def test_mean_truncated_entropy_drops_the_sampled_tokens_duplicate():
    """vLLM's flat logprobs: per position the sampled token first (its rank), then the top K. Rank <= K:
    the first entry repeats one of the K and is dropped; rank > K: it is an extra, kept."""
    top = [math.log(0.5), math.log(0.3)]  # K = 2
    flat = SimpleNamespace(
        # position 0: sampled the top token (rank 1); position 1: sampled a tail token (rank 5)
        logprobs=[top[0], *top, math.log(0.01), *top],
        ranks=[1, 1, 2, 5, 1, 2],
        start_indices=[0, 3],
    )
    expected = (truncated_entropy(top) + truncated_entropy([math.log(0.01), *top])) / 2
    assert mean_truncated_entropy(flat, num_logprobs=2) == pytest.approx(expected, rel=1e-12)
    assert mean_truncated_entropy(SimpleNamespace(logprobs=[], ranks=[], start_indices=[]), 2) == 0.0


def test_problem_seed_is_stable_and_distinct():
    assert problem_seed(0, "countdown/1_2_3_4/10") == problem_seed(0, "countdown/1_2_3_4/10")
    seeds = {problem_seed(s, p) for s in (0, 1) for p in ("a", "b", "c")}
    assert len(seeds) == 6 and all(0 <= s < 2**63 for s in seeds)


# --- the sampler


def test_token_entropy_equals_teacher_forced_recomputation(lm):
    model, tokenizer = lm
    ids = _prompt_ids(tokenizer)
    for temperature in (1.0, 0.6):
        chunks = _draw(_sampler(lm, temperature=temperature, top_p=0.9), ids, 24, seed=3)
        for chunk in chunks:
            for generated, mean_entropy in zip(chunk.token_ids, chunk.token_entropy, strict=True):
                full = torch.tensor([ids + generated])
                with torch.no_grad():
                    logits = model(input_ids=full).logits[0, len(ids) - 1 : -1]  # (generated, vocab)
                _, entropy = entropy_from_logits(logits, temperature)
                assert abs(entropy.double().mean().item() - mean_entropy) < 1e-4


def test_same_seed_gives_the_same_samples_and_another_seed_others(lm):
    ids = _prompt_ids(lm[1])
    sampler = _sampler(lm)
    a, b, c = (_draw(sampler, ids, 40, seed) for seed in (7, 7, 8))
    texts = [[t for chunk in run for t in chunk.texts] for run in (a, b, c)]
    assert texts[0] == texts[1] and texts[0] != texts[2]
    np.testing.assert_array_equal(
        np.concatenate([x.token_entropy for x in a]), np.concatenate([x.token_entropy for x in b])
    )


def test_chunks_hold_n_samples_in_batch_size_pieces(lm):
    chunks = _draw(_sampler(lm, batch_size=16), _prompt_ids(lm[1]), 40, seed=0)
    assert [len(chunk.texts) for chunk in chunks] == [16, 16, 8]


def _reference_loop(model, tokenizer, ids, n, seed, temperature, top_p, max_new_tokens, batch_size):
    """No cache at all: every step recomputes the whole sequence of every still-running row."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for start in range(0, n, batch_size):
        rows = [list(ids) for _ in range(min(batch_size, n - start))]
        active = list(range(len(rows)))
        for _ in range(max_new_tokens):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([rows[i] for i in active])).logits[:, -1]
            probs, _ = entropy_from_logits(logits, temperature)
            drawn = torch.multinomial(top_p_filter(probs, top_p), 1, generator=generator)[:, 0].tolist()
            for row, token in zip(active, drawn, strict=True):
                rows[row].append(token)
            active = [
                row for row, token in zip(active, drawn, strict=True) if token != tokenizer.eos_token_id
            ]
            if not active:
                break
        samples += [row[len(ids) :] for row in rows]
    return samples


def test_shared_prompt_cache_is_bit_identical_to_a_loop_without_cache(lm):
    """Same generator, same draws: the shared-KV sampler gives exactly the reference's tokens."""
    model, tokenizer = lm
    ids = _prompt_ids(tokenizer)
    settings = dict(temperature=0.8, top_p=0.95, max_new_tokens=10, batch_size=12)
    chunks = _draw(_sampler(lm, **settings), ids, 30, seed=11)
    ours = [generated for chunk in chunks for generated in chunk.token_ids]
    assert ours == _reference_loop(model, tokenizer, ids, 30, 11, **settings)


def test_samples_stop_at_eos_or_max_new_tokens(lm, check_chunk):
    _, tokenizer = lm
    chunks = _draw(_sampler(lm, max_new_tokens=12, batch_size=64), _prompt_ids(tokenizer), 64, seed=5)
    (chunk,) = chunks
    check_chunk(chunk, tokenizer, max_new_tokens=12)


# --- several problems per forward


PROMPTS = ("3 5 7 2=24:", "9 1=10:", "4 4 8=128:", "2 6 3 9=54:")  # three prompt lengths


def test_many_problems_per_call_draw_the_samples_of_one_at_a_time(lm):
    """Prompts of different lengths share a left-padded batch, each problem with its own generator:
    every token id, text, length and finished flag is the one-problem run's; the token entropies
    differ by float32 rounding only (the logits come from matrix products of another batch shape)."""
    _, tokenizer = lm
    sampler = _sampler(lm, temperature=0.9, top_p=0.95, batch_size=16)
    jobs = [(i, tokenizer(p, add_special_tokens=False)["input_ids"], 100 + i) for i, p in enumerate(PROMPTS)]
    assert len({len(ids) for _, ids, _ in jobs}) == 3
    alone = {index: _draw(sampler, ids, 40, seed) for index, ids, seed in jobs}
    together: dict[int, list] = {}
    for index, chunk in sampler.sample_problems(jobs, 40):
        together.setdefault(index, []).append(chunk)
    assert sorted(together) == sorted(alone)
    for index, chunks in alone.items():
        assert [len(c.texts) for c in together[index]] == [len(c.texts) for c in chunks] == [16, 16, 8]
        for mine, theirs in zip(together[index], chunks, strict=True):
            assert mine.token_ids == theirs.token_ids and mine.texts == theirs.texts
            np.testing.assert_array_equal(mine.lengths, theirs.lengths)
            np.testing.assert_array_equal(mine.finished, theirs.finished)
            np.testing.assert_allclose(mine.token_entropy, theirs.token_entropy, rtol=0, atol=1e-6)


def test_many_problems_per_call_run_one_forward_per_step_for_all(lm):
    """The batch is real: a chunk of every problem costs one prefill and at most max_new_tokens - 1
    decoding forwards in all, not one set per problem."""
    model, tokenizer = lm
    sampler = _sampler(lm, max_new_tokens=12, batch_size=16)
    jobs = [(i, tokenizer(p, add_special_tokens=False)["input_ids"], i) for i, p in enumerate(PROMPTS)]
    calls = []  # input_ids shape of every forward
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        chunks = list(sampler.sample_problems(jobs, 16))
    finally:
        hook.remove()
    assert len(chunks) == len(PROMPTS)
    assert calls[0][0] == len(PROMPTS)  # one prefill of every prompt
    assert 2 <= len(calls) <= 1 + 11
