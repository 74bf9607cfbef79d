"""The one validation loss every system is judged by: mean token NLL on the answers of held-out chats.

    python -m bench.peers.worker eval SPEC.json ADAPTER_DIR      # or "-" for the base model

The same function, in its own process, for every system: the base model from spec.source in fp32,
the saved peft adapter on top, eval mode (no dropout). Scored tokens are each completion up to and
including its end-of-turn token (the template's trailing newline after it is left out: lmtune does
not train on it, TRL and the HF recipe do), predicted from everything before them.
"""

from __future__ import annotations

import time
from typing import Any

from bench.peers.common import Spec, prompt_completion_ids, read_chats


def scored_sequences(tokenizer: Any, chats: list) -> list[tuple[list[int], int]]:
    """(token ids, index of the first scored token) per chat; ids end with the answer's end-of-turn token."""
    out = []
    for chat in chats:
        prompt, completion = prompt_completion_ids(tokenizer, chat)
        eos = tokenizer.eos_token_id
        if eos in completion:
            completion = completion[: len(completion) - completion[::-1].index(eos)]
        out.append((prompt + completion, len(prompt)))
    return out


def answer_nll(model: Any, sequences: list[tuple[list[int], int]], batch_size: int, device: str) -> dict[str, float]:
    """Mean NLL per scored token over all sequences (right-padded batches, fp32)."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start: start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            targets = torch.full_like(ids, -100)
            for row, (seq, first) in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
                targets[row, first - 1: len(seq) - 1] = torch.tensor(seq[first:])  # position t predicts t + 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            total += F.cross_entropy(logits.float().flatten(0, 1), targets.to(device).flatten(), reduction="sum",
                                     ignore_index=-100).item()
            count += int((targets != -100).sum())
    return {"eval_loss": total / count, "eval_tokens": count}


def run(spec: Spec, adapter: str | None, batch_size: int = 8) -> dict[str, Any]:
    """Validation loss of the base model with `adapter` (None: the base alone)."""
    started = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.source)
    model = AutoModelForCausalLM.from_pretrained(spec.source, dtype=torch.float32).to(spec.device)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    result = answer_nll(model, scored_sequences(tokenizer, read_chats(spec.eval_file)), batch_size, spec.device)
    return {**result, "adapter": adapter, "seconds": time.perf_counter() - started}
