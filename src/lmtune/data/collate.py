"""Collators: a list of Encoded examples -> model-ready tensors, padded or packed without padding.

Usage:
    batch = pad_collate(encoded, pad_id=tokenizer.pad_token_id)   # [B, L] + attention_mask
    batch = pack_collate(encoded)                                  # [1, T], no attention_mask
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   attention_mask=batch.get("attention_mask"), use_cache=False).logits
    loss = cross_entropy(logits.flatten(0, 1), batch["target_ids"].flatten(), reduction="sum",
                         ignore_index=-100) / batch["n_tokens"]

Labels are shifted here: target_ids[t] is the token to predict at position t (labels[t + 1] of the
same example), -100 on each example's last position and on padding. So no token ever predicts
across an example border and packed and padded batches give the same loss.

Packed rows carry no attention_mask: transformers then reads the restarting position_ids and builds
a block-diagonal causal mask (sdpa/eager) or varlen flash-attention calls. Pass use_cache=False:
with a KV cache transformers skips that detection and would let examples attend to each other.
"""

from __future__ import annotations

import random

import torch

from lmtune.data.encode import IGNORE, Encoded


def shifted_targets(labels: list[int]) -> list[int]:
    """labels[1:] + [-100]: what each position must predict, nothing after the example's end."""
    return list(labels[1:]) + [IGNORE] if labels else []


def pad_collate(batch: list[Encoded], pad_id: int, pad_to_multiple_of: int | None = None) -> dict:
    """Right-padded [B, L] input_ids, attention_mask, target_ids, position_ids and n_tokens."""
    lengths = [len(e.input_ids) for e in batch]
    width = max(lengths, default=0)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    target_ids = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    # The mask comes from the lengths: pad_id may equal a real token (SmolLM2 pads with its EOS).
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (enc, n) in enumerate(zip(batch, lengths)):
        input_ids[row, :n] = torch.tensor(enc.input_ids, dtype=torch.long)
        target_ids[row, :n] = torch.tensor(shifted_targets(enc.labels), dtype=torch.long)
        attention_mask[row, :n] = 1
    position_ids = torch.arange(width, dtype=torch.long).expand(len(batch), width).clone()
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "target_ids": target_ids,
        "position_ids": position_ids,
        "n_tokens": int((target_ids != IGNORE).sum()),
    }


def pack_rows(lengths: list[int], row_len: int | None) -> list[list[int]]:
    """Group example indices, in order, into rows of at most row_len tokens (one row when None)."""
    rows: list[list[int]] = [[]]
    used = 0
    for i, n in enumerate(lengths):
        if row_len is not None and rows[-1] and used + n > row_len:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


def pack_collate(batch: list[Encoded], row_len: int | None = None) -> dict:
    """Padding-free batch: examples concatenated into rows of at most row_len tokens.

    Position ids restart at 0 for every example, which is how transformers recognises packed
    sequences and keeps attention inside each example (no attention_mask is returned). Bounding the
    row length keeps the attention cost near the per-example cost instead of quadratic in the whole
    micro-batch. The tail of a shorter row is filler: its own position run, no targets. Also returns
    n_tokens, seq_lens and cu_seqlens (int32 offsets of the first row's examples, for flash varlen).
    """
    lengths = [len(e.input_ids) for e in batch]
    rows = pack_rows(lengths, row_len)
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    target_ids = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for r, row in enumerate(rows):
        col = 0
        for i in row:
            n = lengths[i]
            ids[r, col : col + n] = torch.tensor(batch[i].input_ids)
            positions[r, col : col + n] = torch.arange(n)
            target_ids[r, col : col + n] = torch.tensor(shifted_targets(batch[i].labels))
            col += n
        positions[r, col:] = torch.arange(width - col)
    offsets = [0]
    for i in rows[0]:
        offsets.append(offsets[-1] + lengths[i])
    return {
        "input_ids": ids,
        "position_ids": positions,
        "target_ids": target_ids,
        "n_tokens": int((target_ids != IGNORE).sum()),
        "seq_lens": lengths,
        "cu_seqlens": torch.tensor(offsets, dtype=torch.int32),
    }


def length_grouped_order(lengths: list[int], batch_size: int, seed: int) -> list[int]:
    """Example indices ordered so each consecutive `batch_size` slice holds similar lengths.

    A seeded shuffle is cut into mega-chunks of 50 * batch_size, each sorted by length (longest first)
    and cut into batches; the full batches are shuffled and a final partial batch stays last, so that
    slicing the order into batches never mixes two groups.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = 50 * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        group = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    rng.shuffle(batches)
    return [i for b in batches + tail for i in b]
