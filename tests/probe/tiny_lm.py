"""A random tiny Qwen2 with a char-level tokenizer, for the probe's own tests.

Independent of the shared `tiny_base` fixture so the sampling/store tests run on their own;
the end-to-end tests use `tiny_base` (the SFT-trained embedded model) instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SYMBOLS = list("0123456789+-*/() =:")


def char_tokenizer(with_pad: bool = True) -> PreTrainedTokenizerFast:
    specials = ["<pad>", "<eos>"] if with_pad else ["<eos>"]
    vocab = {token: i for i, token in enumerate(specials + SYMBOLS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<eos>",
        pad_token="<pad>" if with_pad else None,
        padding_side="left",
    )


def random_model(tokenizer, seed: int = 0, hidden: int = 64, layers: int = 2) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # a flatter-than-init output layer so samples vary and EOS shows up
        model.model.embed_tokens.weight.mul_(4.0)
    return model


def save_random(path: Path, with_pad: bool = True, seed: int = 0) -> Path:
    tokenizer = char_tokenizer(with_pad)
    random_model(tokenizer, seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
