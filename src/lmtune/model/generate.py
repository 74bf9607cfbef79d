"""Batched text generation (evaluation, GRPO sampling, serving): left padding, the KV cache, EOS and stop strings.

Usage:
    tok = byte_tokenizer(); model = tiny_causal_lm(vocab_size=len(tok))
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                     add_generation_prompt=True)
    gens = generate(model, tok, [prompt], max_new_tokens=8, stop=["\\n"])
    gens[0].text, gens[0].finish_reason      # "...", "stop" | "length"

Prompts are already rendered text (the chat template's generation prompt included), so they are
tokenized without adding special tokens. Prompts are sorted by length before batching, which keeps
padding small, and the results come back in the caller's order. Greedy decoding when temperature is 0,
otherwise sampling with top-p; the same seed gives the same outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Generation:
    """One generated continuation: its text (cut at the first stop string) and how it ended."""

    text: str
    n_prompt_tokens: int
    n_new_tokens: int
    finish_reason: Literal["stop", "length"]


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 16,
    batch_size: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: list[str] | None = None,
    seed: int = 0,
    desc: str | None = None,
) -> list[Generation]:
    """Generate a continuation for every prompt, in batches, and return them in the prompts' order.

    With `desc`, a progress bar (with an ETA) named desc counts the prompts on stderr.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be positive, got {max_new_tokens} and {batch_size}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature} and {top_p}")
    stop = [s for s in (stop or []) if s]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {i} is empty: there is nothing to continue")

    eos_ids = eos_ids_of(model, tokenizer)
    # A tokenizer without a pad token (many base models) pads with EOS; the attention mask hides it.
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    options = dict(max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad_id, use_cache=True)
    # Set every sampling knob explicitly so that a model's own generation_config (top_k, repetition
    # penalty, ...) cannot change what an evaluation measures.
    options.update(do_sample=temperature > 0, repetition_penalty=1.0)
    if temperature > 0:
        options.update(temperature=temperature, top_p=top_p, top_k=0)
    if stop:
        # transformers marks a row finished as soon as it ends with a stop string, so the batch stops
        # when every row is done instead of running to max_new_tokens.
        options.update(stop_strings=stop, tokenizer=tokenizer)

    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    results: list[Generation | None] = [None] * len(prompts)
    device = _device(model)
    was_training = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            bar = tqdm(total=len(order), desc=desc, unit="ex", disable=desc is None, dynamic_ncols=True)
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                input_ids, attention_mask = left_pad([encoded[i] for i in rows], pad_id, device)
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **options)
                new = out[:, input_ids.shape[1] :].tolist()
                for i, ids in zip(rows, new):
                    results[i] = finish_row(tokenizer, ids, len(encoded[i]), set(eos_ids), stop)
                bar.update(len(rows))
            bar.close()
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def eos_ids_of(model, tokenizer) -> list[int]:
    """The tokenizer's EOS plus the model's generation_config EOS ids that are special tokens."""
    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    config_eos = [config_eos] if isinstance(config_eos, int) else list(config_eos or [])
    # A config built from defaults (e.g. a randomly initialised test model) can name an ordinary text
    # token as EOS; only ids the tokenizer knows as special/added tokens (<|eot_id|>, ...) are trusted.
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    ids += [i for i in config_eos if i in special and i not in ids]
    if not ids:
        raise ValueError("the tokenizer and the model's generation_config define no EOS token")
    return ids


def _device(model) -> torch.device:
    """The device of the model's first parameter (works for peft-wrapped models too)."""
    return next(model.parameters()).device


def left_pad(batch: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into input_ids and attention_mask, so every row's last token is at the end."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def finish_row(tokenizer, ids: list[int], n_prompt: int, eos_ids: set[int], stop: list[str]) -> Generation:
    """Cut one row's new tokens at EOS or the first stop string and count what was generated."""
    end = next((k for k, t in enumerate(ids) if t in eos_ids), None)
    kept = ids if end is None else ids[:end]
    text = tokenizer.decode(kept, skip_special_tokens=True)
    cut = min((p for p in (text.find(s) for s in stop) if p >= 0), default=None)
    if cut is not None:
        # Count tokens up to the one that completed the stop string (what the model actually spent).
        n_new = next(k for k in range(1, len(kept) + 1) if _has_stop(tokenizer.decode(kept[:k], skip_special_tokens=True), stop))
        return Generation(text[:cut], n_prompt, n_new, "stop")
    if end is not None:
        return Generation(text, n_prompt, end + 1, "stop")
    return Generation(text, n_prompt, len(ids), "length")


def _has_stop(text: str, stop: list[str]) -> bool:
    """Whether any stop string occurs in text."""
    return any(s in text for s in stop)
