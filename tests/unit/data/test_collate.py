"""Collators: shifted targets, masks from lengths, and packed == padded loss on a tiny model, with no
attention across the examples of a pack."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmtune.config import DataConfig
from lmtune.data.collate import length_grouped_order, pack_collate, pad_collate, shifted_targets
from lmtune.data.encode import IGNORE, Encoded, encode_example
from lmtune.data.records import Example, Message
from lmtune.model.tiny import byte_tokenizer, tiny_causal_lm


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_causal_lm(vocab_size=len(tok), seed=1).eval()


@pytest.fixture(scope="module")
def encoded(tok):
    cfg = DataConfig(template="chatml")
    examples = [
        Example("chat", messages=[Message("user", "Hi there"), Message("assistant", "Hello!")]),
        Example("text", text="plain text to model"),
        Example("chat", messages=[Message("user", "2+2?"), Message("assistant", "4"), Message("user", "x2?"),
                                  Message("assistant", "8")]),
        Example("chat", messages=[Message("user", "a"), Message("assistant", "b")]),
    ]
    return [encode_example(e, tok, cfg) for e in examples]


def loss_of(model, batch) -> torch.Tensor:
    logits = model(
        input_ids=batch["input_ids"],
        position_ids=batch["position_ids"],
        attention_mask=batch.get("attention_mask"),
        use_cache=False,
    ).logits
    targets = batch["target_ids"].flatten()
    total = F.cross_entropy(logits.flatten(0, 1).float(), targets, ignore_index=IGNORE, reduction="sum")
    return total / batch["n_tokens"]


def test_shifted_targets():
    assert shifted_targets([IGNORE, 5, 6]) == [5, 6, IGNORE]
    assert shifted_targets([7]) == [IGNORE]
    assert shifted_targets([]) == []


def test_pad_collate_masks_come_from_lengths():
    eos = 9  # pad_id equals a real token that also ends the examples, as with SmolLM2
    batch = pad_collate([Encoded([1, 2, 9], [IGNORE, 2, 9]), Encoded([4, 9], [4, 9])], pad_id=eos, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[1, 2, 9, 9], [4, 9, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["target_ids"].tolist() == [[2, 9, IGNORE, IGNORE], [9, IGNORE, IGNORE, IGNORE]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert batch["n_tokens"] == 3


def test_pack_collate_layout():
    batch = pack_collate([Encoded([1, 2, 3], [IGNORE, 2, 3]), Encoded([4], [4]), Encoded([5, 6], [5, 6])])
    assert "attention_mask" not in batch
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 0, 1]]
    # No position predicts the next example's first token.
    assert batch["target_ids"].tolist() == [[2, 3, IGNORE, IGNORE, 6, IGNORE]]
    assert batch["seq_lens"] == [3, 1, 2]
    assert batch["cu_seqlens"].dtype == torch.int32 and batch["cu_seqlens"].tolist() == [0, 3, 4, 6]
    assert batch["n_tokens"] == 3


def test_packed_and_padded_losses_are_equal(model, encoded, tok):
    with torch.no_grad():
        padded = loss_of(model, pad_collate(encoded, pad_id=tok.pad_token_id, pad_to_multiple_of=8))
        packed = loss_of(model, pack_collate(encoded))
        one_by_one = [loss_of(model, pad_collate([e], pad_id=tok.pad_token_id)) for e in encoded]
    assert pad_collate(encoded, 0)["n_tokens"] == pack_collate(encoded)["n_tokens"]
    assert abs(padded.item() - packed.item()) < 1e-5
    # Sanity: the examples differ, so equality above is not an accident of identical rows.
    assert max(x.item() for x in one_by_one) - min(x.item() for x in one_by_one) > 1e-3


def test_pack_collate_bounded_rows_layout():
    batch = pack_collate([Encoded([1, 2, 3], [IGNORE, 2, 3]), Encoded([4], [4]), Encoded([5, 6], [5, 6])], row_len=4)
    # Rows of at most 4 tokens, in order: [ex0, ex1] and [ex2 + filler].
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0], [0, 1, 0, 1]]
    assert batch["target_ids"].tolist() == [[2, 3, IGNORE, IGNORE], [6, IGNORE, IGNORE, IGNORE]]
    assert batch["n_tokens"] == 3
    # An example longer than the row gets a row of its own.
    assert pack_collate([Encoded([1] * 6, [1] * 6), Encoded([2], [2])], row_len=4)["input_ids"].shape == (2, 6)


@pytest.mark.parametrize("row_len", [None, 12, 25, 40])
def test_bounded_packing_gives_the_padded_loss(model, encoded, tok, row_len):
    with torch.no_grad():
        padded = loss_of(model, pad_collate(encoded, pad_id=tok.pad_token_id))
        packed_batch = pack_collate(encoded, row_len=row_len)
        packed = loss_of(model, packed_batch)
    if row_len == 12:
        assert packed_batch["input_ids"].shape[0] > 1
    assert abs(padded.item() - packed.item()) < 1e-5


def test_packing_blocks_attention_across_examples(model):
    first, second = Encoded(list(range(10, 20)), list(range(10, 20))), Encoded(list(range(30, 37)), list(range(30, 37)))
    changed = Encoded(list(range(50, 60)), list(range(50, 60)))
    with torch.no_grad():
        a = pack_collate([first, second])
        b = pack_collate([changed, second])
        logits_a = model(input_ids=a["input_ids"], position_ids=a["position_ids"], use_cache=False).logits
        logits_b = model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
        # Control: one continuous sequence (no position restart) does see the first example.
        plain = torch.arange(17).unsqueeze(0)
        leak_a = model(input_ids=a["input_ids"], position_ids=plain, use_cache=False).logits
        leak_b = model(input_ids=b["input_ids"], position_ids=plain, use_cache=False).logits
    assert torch.allclose(logits_a[0, 10:], logits_b[0, 10:], atol=1e-6)
    assert not torch.allclose(leak_a[0, 10:], leak_b[0, 10:], atol=1e-4)


@pytest.mark.parametrize("batch_size", [1, 4, 7])
def test_length_grouped_order(batch_size):
    lengths = [(i * 37) % 101 + 1 for i in range(500)]
    order = length_grouped_order(lengths, batch_size, seed=3)
    assert sorted(order) == list(range(500))
    assert order == length_grouped_order(lengths, batch_size, seed=3)
    assert order != length_grouped_order(lengths, batch_size, seed=4)
    batches = [order[i : i + batch_size] for i in range(0, 500, batch_size)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread <= 3  # random batches of 4 or 7 from lengths 1..101 spread by ~50
    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest != sorted(longest, reverse=True)  # the batches themselves are shuffled
