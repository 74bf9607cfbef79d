"""General-text loss on the tiny model: hand-computed cross-entropy, it can move, modes are restored."""

import math

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from pydoc_data.topics import topics

from lmtune.evaluate.forgetting import forgetting_report, general_text, general_text_loss
from lmtune.model.tiny import byte_tokenizer, tiny_causal_lm


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def test_general_text_is_deterministic_and_cut():
    text = general_text(5000)
    assert len(text) == 5000 and text == general_text(5000)
    assert text.startswith(topics[sorted(topics)[0]].strip()[:100])
    assert general_text(100) == text[:100]
    assert len(general_text()) == 20000


def test_loss_equals_hand_computed_cross_entropy(tok):
    model = tiny_causal_lm(vocab_size=len(tok))
    text = general_text(3000)
    r = general_text_loss(model, tok, text, block_size=64, max_blocks=4)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    blocks = torch.tensor(ids[: 4 * 64]).view(4, 64)
    with torch.no_grad():
        logits = model(input_ids=blocks).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1)).item()
    assert r["tokens"] == 4 * 63
    assert r["loss"] == pytest.approx(expected, rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    # A random model over ~260 tokens is near the uniform loss.
    assert abs(r["loss"] - math.log(len(tok))) < 0.5
    assert general_text_loss(model, tok, text, block_size=64, max_blocks=4) == r


def test_short_text_is_one_block_and_max_blocks_caps_tokens(tok):
    model = tiny_causal_lm(vocab_size=len(tok))
    assert general_text_loss(model, tok, "hello world", block_size=64)["tokens"] == 10
    assert general_text_loss(model, tok, general_text(5000), block_size=32, max_blocks=3)["tokens"] == 3 * 31
    with pytest.raises(ValueError, match="at least 2"):
        general_text_loss(model, tok, "x")


def test_training_on_the_text_lowers_the_loss(tok):
    torch.manual_seed(0)
    model = tiny_causal_lm(vocab_size=len(tok))
    text = general_text(4000)
    before = general_text_loss(model, tok, text, block_size=64, max_blocks=8)
    blocks = torch.tensor(tok(text, add_special_tokens=False)["input_ids"][: 8 * 64]).view(8, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(15):
        loss = model(input_ids=blocks, labels=blocks).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = general_text_loss(model, tok, text, block_size=64, max_blocks=8)
    assert after["loss"] < before["loss"] - 1.0
    report = forgetting_report(after, before)  # "tuned" = the untrained one: it forgot
    assert report["delta"] == pytest.approx(before["loss"] - after["loss"]) and report["delta"] > 0


def test_mode_is_restored(tok):
    model = tiny_causal_lm(vocab_size=len(tok), overrides={"attention_dropout": 0.5})
    model.train()
    first = general_text_loss(model, tok, general_text(2000), block_size=64, max_blocks=2)
    assert model.training and all(m.training for m in model.modules())
    # Dropout is off while measuring, so the result does not depend on the random state.
    assert general_text_loss(model, tok, general_text(2000), block_size=64, max_blocks=2) == first
    model.eval()
    general_text_loss(model, tok, general_text(2000), block_size=64, max_blocks=2)
    assert not model.training


def test_works_on_a_peft_model(tok):
    base = tiny_causal_lm(vocab_size=len(tok))
    text = general_text(2000)
    base_loss = general_text_loss(base, tok, text, block_size=64, max_blocks=2)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    # A fresh LoRA adapter (B = 0) leaves the model unchanged.
    assert general_text_loss(peft_model, tok, text, block_size=64, max_blocks=2)["loss"] == pytest.approx(base_loss["loss"])


def test_forgetting_report():
    base = {"loss": 2.0, "perplexity": math.exp(2.0), "tokens": 100}
    tuned = {"loss": 2.5, "perplexity": math.exp(2.5), "tokens": 100}
    r = forgetting_report(base, tuned)
    assert r["text"] == "pydoc_data.topics"
    assert (r["base_loss"], r["fine_tuned_loss"], r["delta"]) == (2.0, 2.5, 0.5)
    assert r["relative_change"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="different token counts"):
        forgetting_report(base, {**tuned, "tokens": 99})
