"""Prompt templates: exact chunk texts, EOS at the end of every answer, and the refusal of templates
whose answer spans cannot be found."""

from __future__ import annotations

import pytest

from lmtune.data.records import Message
from lmtune.data.templates import generation_prompt, render_chunks, resolve_template
from lmtune.model.tiny import byte_tokenizer

CHAT = [
    Message("system", "Be brief."),
    Message("user", "Hi"),
    Message("assistant", "Hello"),
    Message("user", "2+2?"),
    Message("assistant", "4"),
]
SINGLE = [Message("user", "Name a colour."), Message("assistant", "Red")]
TEMPLATES = ["tokenizer", "chatml", "human-assistant", "alpaca"]

# Drops the reasoning of earlier answers, like several reasoning models' templates do.
REWRITING_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' and not loop.last %}"
    "{{ '<|im_start|>assistant\n' + m['content'].split('</think>')[-1] + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A template whose turns do not end with the EOS token: EOS must be added to the answer.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def answers(chunks):
    return [c.text for c in chunks if c.trainable]


def test_chatml_chunks_exact(tok):
    chunks = render_chunks(SINGLE, "chatml", tok)
    assert [(c.text, c.role, c.trainable) for c in chunks] == [
        ("<|im_start|>user\nName a colour.<|im_end|>\n", "user", False),
        ("<|im_start|>assistant\n", "assistant", False),
        ("Red<|im_end|>", "assistant", True),
        ("\n", "assistant", False),
    ]


def test_human_assistant_text_exact(tok):
    text = "".join(c.text for c in render_chunks(CHAT, "human-assistant", tok))
    assert text == (
        "Be brief.\n###Human: Hi\n###Assistant: Hello<|im_end|>\n###Human: 2+2?\n###Assistant: 4<|im_end|>"
    )


def test_alpaca_text_exact(tok):
    text = "".join(c.text for c in render_chunks(SINGLE, "alpaca", tok))
    assert text == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nName a colour.\n\n### Response:\nRed<|im_end|>"
    )
    with_system = render_chunks([Message("system", "Answer in French."), *SINGLE], "alpaca", tok)
    assert with_system[0].text == "Answer in French.\n\n"


def test_tokenizer_template_matches_its_own_render(tok):
    chunks = render_chunks(CHAT, "tokenizer", tok)
    full = tok.apply_chat_template([{"role": m.role, "content": m.content} for m in CHAT], tokenize=False)
    assert "".join(c.text for c in chunks) == full
    assert answers(chunks) == ["Hello<|im_end|>", "4<|im_end|>"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_answer_ends_with_eos(tok, template):
    messages = SINGLE if template == "alpaca" else CHAT
    found = answers(render_chunks(messages, template, tok))
    expected = [m.content for m in messages if m.role == "assistant"]
    assert found == [a + tok.eos_token for a in expected]
    for text in found:
        assert tok(text, add_special_tokens=False)["input_ids"][-1] == tok.eos_token_id


@pytest.mark.parametrize("template", TEMPLATES)
def test_generation_prompt_is_the_text_before_the_answer(tok, template):
    messages = SINGLE if template == "alpaca" else CHAT
    chunks = render_chunks(messages, template, tok)
    texts = [c.text for c in chunks]
    last_answer = max(i for i, c in enumerate(chunks) if c.trainable)
    assert generation_prompt(messages[:-1], template, tok) == "".join(texts[:last_answer])


def test_weight_is_carried_on_answer_chunks(tok):
    messages = [
        Message("user", "a"), Message("assistant", "b", weight=0), Message("user", "c"), Message("assistant", "d")
    ]
    trained = [(c.text, c.weight) for c in render_chunks(messages, "chatml", tok) if c.trainable]
    assert trained == [("b<|im_end|>", 0), ("d<|im_end|>", 1)]


def test_eos_appended_when_end_of_turn_is_not_eos():
    tok = byte_tokenizer()
    tok.eos_token = "<|endoftext|>"
    assert answers(render_chunks(SINGLE, "chatml", tok)) == ["Red<|im_end|><|endoftext|>"]


def test_tokenizer_template_without_eos_gets_eos_and_untrained_whitespace():
    tok = byte_tokenizer()
    tok.chat_template = PLAIN_TEMPLATE
    chunks = render_chunks(SINGLE, "tokenizer", tok)
    assert [(c.text, c.trainable) for c in chunks] == [
        ("user: Name a colour.\n\nassistant: ", False),
        ("Red<|im_end|>", True),
        ("\n\n", False),
    ]


def test_rewriting_template_raises_clear_error():
    tok = byte_tokenizer()
    tok.chat_template = REWRITING_TEMPLATE
    messages = [
        Message("user", "Hi"),
        Message("assistant", "<think>greet</think>Hello"),
        Message("user", "Bye"),
        Message("assistant", "Bye"),
    ]
    with pytest.raises(ValueError, match="cannot mark assistant spans") as err:
        render_chunks(messages, "tokenizer", tok)
    assert "chatml/human-assistant/alpaca" in str(err.value)


def test_alpaca_refuses_multi_turn(tok):
    with pytest.raises(ValueError, match="single-turn"):
        render_chunks(CHAT, "alpaca", tok)


def test_auto_and_unknown_templates():
    tok = byte_tokenizer()
    assert resolve_template("auto", tok) == "tokenizer"
    tok.chat_template = None
    assert resolve_template("auto", tok) == "chatml"
    with pytest.raises(ValueError, match="no chat template"):
        resolve_template("tokenizer", tok)
    with pytest.raises(ValueError, match="unknown template"):
        resolve_template("llama2", tok)


def test_an_assistant_first_chat_is_a_clear_error_with_the_tokenizer_template():
    chat = [Message("assistant", "Hello, how can I help?"), Message("user", "Hi")]
    with pytest.raises(ValueError, match="starts with an assistant turn"):
        generation_prompt(chat, "tokenizer", byte_tokenizer())
    assert generation_prompt(chat, "chatml", byte_tokenizer()).startswith("<|im_start|>assistant\nHello")
