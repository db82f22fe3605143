"""VLLMSampler and make_vllm_engine against the HF model: dtype, entropy, seeding, chunking, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from vllm_support import model_vocab

from probe.sampling import VLLMSampler, entropy_from_logits

pytestmark = pytest.mark.vllm

PROMPTS = ["3 5 7=22:", "2 8 9=25:", "1 4 6=10:", "9 9 3=21:"]


@pytest.fixture(scope="module")
def tokenizer(tiny_base_vllm):
    return AutoTokenizer.from_pretrained(tiny_base_vllm)


@pytest.fixture(scope="module")
def hf_model(tiny_base_vllm):
    return AutoModelForCausalLM.from_pretrained(tiny_base_vllm).eval()


def _sampler(engine, tokenizer, **overrides):
    settings = dict(temperature=0.7, top_p=1.0, max_new_tokens=16, batch_size=16, num_logprobs=20)
    return VLLMSampler(engine, tokenizer, **(settings | overrides))


def _ids(tokenizer, prompt):
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def _flat(chunks):
    return [ids for chunk in chunks for ids in chunk.token_ids]


def test_engine_keeps_the_checkpoints_float32(engine):
    """Finding 1: vLLM's own "auto" would run this float32 checkpoint in bfloat16."""
    assert engine.llm_engine.model_config.dtype == torch.float32


def test_entropy_with_every_logprob_equals_teacher_forced_entropy(
    engine, tokenizer, hf_model, tiny_base_vllm
):
    """Finding 2: with every logprob returned (vocab from the model config), the truncated estimate is
    the full-softmax entropy; both backends in float32 agree to float32 rounding."""
    vocab = model_vocab(tiny_base_vllm)
    sampler = _sampler(engine, tokenizer, num_logprobs=vocab)
    ids = _ids(tokenizer, PROMPTS[0])
    (chunk,) = list(sampler.sample(ids, 16, seed=1))
    assert len(chunk.texts) == 16
    for generated, mean_entropy in zip(chunk.token_ids, chunk.token_entropy, strict=True):
        with torch.no_grad():
            logits = hf_model(input_ids=torch.tensor([ids + generated])).logits[0, len(ids) - 1 : -1]
        _, entropy = entropy_from_logits(logits, 0.7)
        assert abs(entropy.double().mean().item() - mean_entropy) < 1e-5


def test_sampled_tokens_have_the_hf_models_probabilities(engine, tokenizer, hf_model):
    """vLLM samples from the HF model's softmax(logits / T): each sampled token's processed logprob
    equals the teacher-forced one (so the backends' pass@1 can differ by sampling noise only)."""
    from vllm import SamplingParams, TokensPrompt

    ids = _ids(tokenizer, PROMPTS[1])
    params = SamplingParams(n=16, temperature=0.7, max_tokens=16, seed=3, logprobs=0, flat_logprobs=True)
    (request,) = engine.generate([TokensPrompt(prompt_token_ids=ids)], params, use_tqdm=False)
    for output in request.outputs:
        generated = list(output.token_ids)
        with torch.no_grad():
            logits = hf_model(input_ids=torch.tensor([ids + generated])).logits[0, len(ids) - 1 : -1]
        expected = torch.log_softmax(logits.double() / 0.7, -1)[torch.arange(len(generated)), generated]
        got = np.asarray(output.logprobs.logprobs, np.float64)  # logprobs=0: the sampled token's only
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_same_seed_same_samples_whatever_the_chunking(engine, tokenizer):
    """vLLM seeds sample i of a request with seed + i; chunk `start` asks for seed + start, so every
    chunking draws the same samples, and another seed draws others."""
    ids = _ids(tokenizer, PROMPTS[0])
    by_16 = list(_sampler(engine, tokenizer, batch_size=16).sample(ids, 40, seed=7))
    assert [len(chunk.texts) for chunk in by_16] == [16, 16, 8]
    by_40 = list(_sampler(engine, tokenizer, batch_size=40).sample(ids, 40, seed=7))
    again = list(_sampler(engine, tokenizer, batch_size=16).sample(ids, 40, seed=7))
    other = list(_sampler(engine, tokenizer, batch_size=16).sample(ids, 40, seed=8))
    assert _flat(by_16) == _flat(by_40) == _flat(again) != _flat(other)
    np.testing.assert_array_equal(
        np.concatenate([c.token_entropy for c in by_16]), np.concatenate([c.token_entropy for c in by_40])
    )


def test_many_problems_per_call_give_what_one_at_a_time_gives(engine, tokenizer):
    sampler = _sampler(engine, tokenizer, batch_size=16)
    jobs = [(index, _ids(tokenizer, prompt), 100 + index) for index, prompt in enumerate(PROMPTS)]
    together: dict[int, list] = {}
    for index, chunk in sampler.sample_problems(jobs, 40):
        together.setdefault(index, []).append(chunk)
    for index, ids, seed in jobs:
        alone = list(sampler.sample(ids, 40, seed))
        assert _flat(together[index]) == _flat(alone)
        assert [c.texts for c in together[index]] == [c.texts for c in alone]
        np.testing.assert_array_equal(
            np.concatenate([c.token_entropy for c in together[index]]),
            np.concatenate([c.token_entropy for c in alone]),
        )


def test_chunks_stop_at_eos_and_decode_like_the_hf_backend(engine, tokenizer, check_chunk):
    (chunk,) = list(
        _sampler(engine, tokenizer, temperature=1.5, max_new_tokens=6, batch_size=64).sample(
            _ids(tokenizer, PROMPTS[2]), 64, seed=5
        )
    )
    check_chunk(chunk, tokenizer, max_new_tokens=6)


def test_num_logprobs_above_the_engines_limit_is_refused(engine, tokenizer, tiny_base_vllm):
    with pytest.raises(ValueError, match="max_logprobs"):
        _sampler(engine, tokenizer, num_logprobs=model_vocab(tiny_base_vllm) + 1)
