"""Generation on a tiny random Llama: batching with left padding, stop strings, limits, peft."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lmtune.model.generate import Generation, generate
from lmtune.model.tiny import byte_tokenizer, tiny_causal_lm

PROMPTS = ["Hello there, how are you?", "Hi", "A much longer prompt that needs a lot of left padding", "Ok."]


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_causal_lm(vocab_size=len(tok), seed=1)


def _printable_from(text: str, start: int, length: int = 1) -> str:
    """The first run of `length` printable characters at or after start (random bytes give many U+FFFD)."""
    ok = [c.isprintable() and c != "\ufffd" for c in text]
    k = next(k for k in range(start, len(text)) if all(ok[k : k + length]) and k + length <= len(text))
    return text[k : k + length]


def test_batched_equals_one_at_a_time(model, tok):
    batched = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=4)
    single = [generate(model, tok, [p], max_new_tokens=12, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    # The results come back in the prompts' order even though batches are sorted by length.
    assert [g.n_prompt_tokens for g in batched] == [len(p.encode()) for p in PROMPTS]


def test_batch_size_does_not_change_results(model, tok):
    assert generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=3) == generate(
        model, tok, PROMPTS, max_new_tokens=8, batch_size=2
    )


def test_max_new_tokens_and_length_finish(model, tok):
    for g in generate(model, tok, PROMPTS, max_new_tokens=5):
        assert g.finish_reason == "length"
        assert g.n_new_tokens == 5
        assert len(g.text) <= 5  # byte tokenizer: at most one character per token


def test_stop_string_truncates_text(model, tok):
    full = generate(model, tok, PROMPTS, max_new_tokens=16)
    # Pick a printable character from the middle of the first continuation as a stop string.
    char = _printable_from(full[0].text, 3)
    cut = generate(model, tok, PROMPTS, max_new_tokens=16, stop=[char])
    first = cut[0]
    assert first.text == full[0].text[: full[0].text.index(char)]
    assert first.finish_reason == "stop"
    assert first.n_new_tokens < 16
    for f, c in zip(full, cut):
        if char in f.text:
            assert c.text == f.text[: f.text.index(char)] and c.finish_reason == "stop"
        else:
            assert c == f


def test_multi_token_stop_string_and_earliest_of_several(model, tok):
    full = generate(model, tok, [PROMPTS[0]], max_new_tokens=16)[0].text
    two = _printable_from(full, 3, length=2)  # two byte tokens must both appear before the row stops
    later = _printable_from(full, full.index(two) + 2)
    g = generate(model, tok, [PROMPTS[0]], max_new_tokens=16, stop=[later, two])[0]
    assert g.text == full[: min(full.index(two), full.index(later))]
    assert g.finish_reason == "stop"


def test_stopped_rows_end_the_batch_and_decoding_uses_the_kv_cache(model, tok):
    full = generate(model, tok, PROMPTS[:2], max_new_tokens=16)
    stops = [_printable_from(full[0].text, 5), _printable_from(full[1].text, 3)]
    seen = []
    hook = model.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs["input_ids"].shape), with_kwargs=True)
    try:
        gens = generate(model, tok, PROMPTS[:2], max_new_tokens=16, stop=stops)
    finally:
        hook.remove()
    assert all(g.finish_reason == "stop" for g in gens)
    # One forward pass per generated token, no more: the batch ends when its last row stops.
    assert len(seen) == max(g.n_new_tokens for g in gens) < 16
    # After the prompt, each step feeds only the new token (the KV cache holds the rest).
    assert all(shape[1] == 1 for shape in seen[1:])


def test_eos_stops_with_stop_reason(tok):
    # Swap the lm_head rows of EOS and the 4th greedy token: the model then emits EOS exactly where it
    # would have emitted that token, so the expected cut point is known.
    eos_model = tiny_causal_lm(vocab_size=len(tok), seed=1)
    enc = tok(PROMPTS[0], add_special_tokens=False, return_tensors="pt")
    greedy = eos_model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    new = greedy[0, enc.input_ids.shape[1] :].tolist()
    t = new[3]
    k = new.index(t)
    with torch.no_grad():
        w = eos_model.lm_head.weight
        w[[t, tok.eos_token_id]] = w[[tok.eos_token_id, t]]
    g = generate(eos_model, tok, PROMPTS[:2], max_new_tokens=12)[0]
    assert g == Generation(tok.decode(new[:k]), len(PROMPTS[0]), k + 1, "stop")


def test_sampling_is_deterministic_for_a_seed(model, tok):
    a = generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=3)
    b = generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=3)
    c = generate(model, tok, PROMPTS, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=4)
    assert a == b
    assert a != c
    assert a != generate(model, tok, PROMPTS, max_new_tokens=10)  # sampling is not greedy


def test_peft_wrapped_model_and_training_mode_restored(tok):
    base = tiny_causal_lm(vocab_size=len(tok), seed=1)
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.train()
    batched = generate(peft, tok, PROMPTS, max_new_tokens=8, batch_size=4)
    single = [generate(peft, tok, [p], max_new_tokens=8, batch_size=1)[0] for p in PROMPTS]
    assert batched == single
    assert peft.training
    # Random (non-zero) LoRA weights change the output, so the adapter is really used.
    with peft.disable_adapter():
        assert generate(peft, tok, PROMPTS, max_new_tokens=8) != batched


def test_empty_prompt_is_an_error(model, tok):
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, tok, ["a", ""])
