"""Function-calling data in OpenAI's format: validation, errors naming file/line/field, rendering
(the tokenizer's tool-aware template, or the documented fallback) and the loss mask token by token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmtune.config import DataConfig
from lmtune.data.cache import _message
from lmtune.data.encode import IGNORE, encode_example
from lmtune.data.formats import load_examples
from lmtune.data.records import Example, Message, ToolCall
from lmtune.data.templates import generation_prompt
from lmtune.data.tool_render import native_tools, parse_tool_calls
from lmtune.data.validate import validate_file
from lmtune.model.tiny import byte_tokenizer

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "function_calling.jsonl"
WEATHER = json.loads(FIXTURE.read_text().splitlines()[0])["tools"]

# A tool-aware template in the Hermes/Qwen style, as instruct models ship them.
NATIVE_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTOOLS:{% for t in tools %}{{ t.function.name }}={{ t.function.description }};"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m.role == 'tool' %}<|im_start|>tool\n{{ m.content }}<|im_end|>\n"
    "{% elif m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content }}{% for c in m.tool_calls or [] %}"
    "<call>{{ c.function.name }}{{ c.function.arguments | tojson }}</call>{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def trained_spans(enc, tok) -> list[str]:
    """The decoded runs of consecutive tokens that carry loss."""
    spans, run = [], []
    for token, label in zip(enc.input_ids, enc.labels):
        if label != IGNORE:
            run.append(token)
        elif run:
            spans.append(tok.decode(run))
            run = []
    return spans + ([tok.decode(run)] if run else [])


def test_openai_function_calling_file_validates_with_no_issue():
    report = validate_file(FIXTURE)
    assert report.ok and report.issues == [], [str(i) for i in report.issues]
    assert report.n_examples == 5 and report.stats["roles"]["tool"] == 4  # the legacy `function` role included
    examples, _, fmt = load_examples(FIXTURE)
    assert fmt == "messages" and all(ex.tools and ex.tools[0]["function"]["name"] == "get_current_weather"
                                     for ex in examples)
    paris = examples[1].messages[2]
    assert paris.content == "" and [c.id for c in paris.tool_calls] == ["call_b1", "call_b2"]
    rome = examples[4].messages  # legacy functions/function_call: the function's name links call and result
    assert rome[1].tool_calls == (ToolCall("get_current_weather", "get_current_weather",
                                           '{"location": "Rome, Italy", "format": "celsius"}'),)
    assert rome[2].role == "tool" and rome[2].tool_call_id == "get_current_weather"


def _call(name="get_current_weather", arguments='{"location": "Paris"}', call_id="call_1"):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.mark.parametrize(("row", "code", "field"), [
    ({"tool_calls": [_call(arguments="{not json")]}, "invalid_tool_call", "messages[1].tool_calls[0].function.arguments"),
    ({"tool_calls": [_call(arguments={"location": "Paris"})]}, "invalid_tool_call",
     "messages[1].tool_calls[0].function.arguments"),
    ({"tool_calls": [_call(name="send_email")]}, "unknown_tool", "messages[1].tool_calls[0].function.name"),
    ({"tool_calls": [{"type": "function", "function": {"name": "get_current_weather", "arguments": "{}"}}]},
     "message_missing_key", "messages[1].tool_calls[0].id"),
    ({"tool_calls": []}, "wrong_type", "messages[1].tool_calls"),
    ({"content": None}, "missing_content", "messages[1].content"),
])
def test_bad_tool_calls_name_file_line_and_field(write, row, code, field):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "tools": WEATHER}
    bad = {"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", **row}], "tools": WEATHER}
    path = write("tools.jsonl", [good, bad])
    report = validate_file(path)
    assert [(i.file, i.line, i.code, i.field) for i in report.errors] == [(str(path), 2, code, field)]


@pytest.mark.parametrize(("messages", "extra", "code", "field"), [
    ([{"role": "tool", "tool_call_id": "call_9", "content": "18"}], {}, "unknown_tool_call_id", "messages[2].tool_call_id"),
    ([{"role": "tool", "content": "18"}], {}, "message_missing_key", "messages[2].tool_call_id"),
    ([], {"tools": {"name": "x"}}, "wrong_type", "tools"),
    ([], {"tools": [{"type": "retrieval"}]}, "invalid_tool", "tools[0].type"),
    ([], {"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "invalid_tool", "tools[0].function.name"),
    ([], {"parallel_tool_calls": False}, "invalid_tool_call", "messages[1].tool_calls"),
])
def test_bad_tool_results_and_definitions_name_their_field(write, messages, extra, code, field):
    calls = [_call(), _call(call_id="call_2")]
    row = {"messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": calls}, *messages,
                        {"role": "assistant", "content": "Done."}], "tools": WEATHER, **extra}
    report = validate_file(write("tools.jsonl", [row]))
    assert [(i.line, i.code, i.field) for i in report.errors] == [(1, code, field)]


@pytest.mark.parametrize("template", ["chatml", "tokenizer"])
def test_fallback_trains_the_calls_and_answers_never_tool_results(tok, template):
    """tiny-llama's template has no tool support: tools go into the system turn, calls into the answer as
    <tool_call> blocks, results into user turns; the weight-0 turn and the results carry no loss."""
    assert not native_tools(tok)
    examples, _, _ = load_examples(FIXTURE)
    cfg = DataConfig(template=template, max_seq_len=4096)
    paris = encode_example(examples[1], tok, cfg)
    text = tok.decode(paris.input_ids)
    assert "<tools>\n" + json.dumps(WEATHER[0]) + "\n</tools>" in text and "You are a weather assistant." in text
    assert '<|im_start|>user\n<tool_response>\n{"temperature": 18}\n</tool_response>\n<tool_response>' in text
    call = '<tool_call>\n{{"name": "get_current_weather", "arguments": {{"location": "{}", "format": "celsius"}}}}\n</tool_call>'
    assert trained_spans(paris, tok) == [
        call.format("Paris, France") + "\n" + call.format("Oslo, Norway") + "<|im_end|>",
        "Paris is 18 C, Oslo is 9 C: Paris is warmer.<|im_end|>",
    ]
    lima = encode_example(examples[2], tok, cfg)  # its tool-calling turn has weight 0
    assert trained_spans(lima, tok) == ["It is 68 F in Lima.<|im_end|>"]
    assert "Let me check.\n<tool_call>" in tok.decode(lima.input_ids)


def test_native_tool_template_renders_calls_its_own_way_and_masks_the_same(tok):
    native = byte_tokenizer()
    native.chat_template = NATIVE_TEMPLATE
    assert native_tools(native)
    examples, _, _ = load_examples(FIXTURE)
    enc = encode_example(examples[1], native, DataConfig(template="tokenizer", max_seq_len=4096))
    text = native.decode(enc.input_ids)
    assert text.startswith("<|im_start|>system\nTOOLS:get_current_weather=Get the current weather;")
    assert "<|im_start|>tool\n{\"temperature\": 9}<|im_end|>" in text
    assert trained_spans(enc, native) == [
        '<call>get_current_weather{"location": "Paris, France", "format": "celsius"}</call>'
        '<call>get_current_weather{"location": "Oslo, Norway", "format": "celsius"}</call><|im_end|>',
        "Paris is 18 C, Oslo is 9 C: Paris is warmer.<|im_end|>",
    ]
    prompt = generation_prompt([Message("user", "Weather in Oslo?")], "tokenizer", native, WEATHER)
    assert prompt.endswith("Weather in Oslo?<|im_end|>\n<|im_start|>assistant\n") and "TOOLS:get_current" in prompt


def test_tool_examples_survive_the_prepared_data_cache():
    ex = Example("chat", messages=[Message("user", "x"), Message("assistant", "", 1, (ToolCall("c", "f", "{}"),)),
                                   Message("tool", "ok", tool_call_id="c")], tools=WEATHER)
    canon = ex.canonical()
    assert [_message(m) for m in canon["messages"]] == ex.messages and canon["tools"] == WEATHER
    plain = Example("chat", messages=[Message("user", "x"), Message("assistant", "y")]).canonical()
    assert "tools" not in plain and plain["messages"] == [["user", "x", 1], ["assistant", "y", 1]]  # fingerprints kept


@pytest.mark.parametrize(("text", "content", "calls"), [
    ('Sure.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', "Sure.", [("f", '{"a": 1}')]),
    ('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call><tool_call>{"name": "g", "arguments": {}}',
     "", [("f", '{"a": 1}'), ("g", "{}")]),
    ('{"name": "f", "parameters": {"a": "é"}}', "", [("f", '{"a": "é"}')]),
    ("<tool_call>not json</tool_call>", "<tool_call>not json</tool_call>", []),
    ('{"answer": 4}', '{"answer": 4}', []),
    ('{"name": "f", "arguments": {}} and then some text', '{"name": "f", "arguments": {}} and then some text', []),
])
def test_parse_tool_calls(text, content, calls):
    got_content, got = parse_tool_calls(text)
    assert got_content == content and [(c.name, c.arguments) for c in got] == calls
