"""What specialisation costs: language-model loss on held-out general English, before and after tuning.

Usage:
    text = general_text()                                   # deterministic, ships with Python
    base = general_text_loss(base_model, tokenizer)         # {"loss", "perplexity", "tokens"}
    tuned = general_text_loss(tuned_model, tokenizer)
    forgetting_report(base, tuned)                          # delta > 0: the tuned model got worse

The text is Python's own documentation (pydoc_data.topics): plain technical English that no user's
fine-tuning data is likely to contain, available offline. It is not a benchmark; it only shows
whether fine-tuning degraded the model's general language modelling, and by how much.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from pydoc_data.topics import topics

TEXT_NAME = "pydoc_data.topics"


def general_text(max_chars: int = 20000) -> str:
    """Deterministic general English: pydoc topics in sorted key order, cut to max_chars."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    return "\n\n".join(topics[name].strip() for name in sorted(topics))[:max_chars]


def _blocks(ids: list[int], block_size: int, max_blocks: int) -> torch.Tensor:
    """Non-overlapping (n_blocks, block_size) blocks; a text shorter than one block is one short block."""
    n_full = min(len(ids) // block_size, max_blocks)
    if n_full == 0:
        if len(ids) < 2:
            raise ValueError(f"the text has {len(ids)} tokens; at least 2 are needed to predict one")
        return torch.tensor([ids], dtype=torch.long)
    return torch.tensor(ids[: n_full * block_size], dtype=torch.long).view(n_full, block_size)


def general_text_loss(model, tokenizer, text: str | None = None, block_size: int = 256, max_blocks: int = 16,
                      desc: str | None = None) -> dict:
    """Mean next-token cross-entropy over non-overlapping blocks of text (default: general_text()); with
    `desc`, a progress bar of that name."""
    if block_size < 2 or max_blocks < 1:
        raise ValueError(f"need block_size >= 2 and max_blocks >= 1, got {block_size}, {max_blocks}")
    ids = tokenizer(text if text is not None else general_text(), add_special_tokens=False)["input_ids"]
    blocks = _blocks(ids, block_size, max_blocks)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout, so the measure is deterministic
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            # One block per forward pass keeps memory flat for real models and long blocks.
            for block in tqdm(blocks, desc=desc, unit="block", disable=desc is None, dynamic_ncols=True):
                input_ids = block[None].to(device)
                logits = model(input_ids=input_ids).logits[0, :-1].float()
                total += F.cross_entropy(logits, input_ids[0, 1:], reduction="sum").item()
                count += input_ids.shape[1] - 1
    finally:
        model.train(was_training)
    loss = total / count
    # exp overflows above ~709; such a model's perplexity is simply infinite.
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 709 else math.inf, "tokens": count}


def forgetting_report(base_loss: dict, tuned_loss: dict) -> dict:
    """Base vs fine-tuned loss on the general text; delta > 0 means general ability was lost."""
    if base_loss["tokens"] != tuned_loss["tokens"]:
        raise ValueError(
            f"the losses were measured on different token counts ({base_loss['tokens']} vs {tuned_loss['tokens']}); "
            "use the same text, tokenizer and block settings for both"
        )
    delta = tuned_loss["loss"] - base_loss["loss"]
    return {
        "text": TEXT_NAME,
        "tokens": base_loss["tokens"],
        "base_loss": base_loss["loss"],
        "fine_tuned_loss": tuned_loss["loss"],
        "base_perplexity": base_loss["perplexity"],
        "fine_tuned_perplexity": tuned_loss["perplexity"],
        "delta": delta,
        "relative_change": delta / base_loss["loss"] if base_loss["loss"] else (0.0 if delta == 0 else math.inf),
    }
