"""Tiny offline models for tests and benchmarks: random weights from a config and a byte-level tokenizer.

The tokenizer maps every UTF-8 byte to one token (no training, so it is deterministic and covers any
text) and adds chatml special tokens and a chat template, like a small real instruct model.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

TINY_LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: 256 byte tokens, chatml specials, eos = <|im_end|>, a chat template."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        pad_token="<pad>",
        unk_token=None,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|im_start|>", "<pad>")],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_causal_lm(overrides: dict[str, Any] | None = None, seed: int = 0, vocab_size: int | None = None):
    """A randomly initialised causal LM (a 2-layer Llama by default) built from a config dict."""
    spec = {**TINY_LLAMA, **(overrides or {})}
    model_type = spec.pop("model_type")
    if vocab_size is not None:
        spec.setdefault("vocab_size", vocab_size)
    config = AutoConfig.for_model(model_type, **spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)
