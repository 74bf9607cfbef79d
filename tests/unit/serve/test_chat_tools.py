"""Chat completions' tools and response_format: request checks, tool calls parsed into OpenAI's
message shape, JSON answers checked against the schema (errors in OpenAI's shape, never passed off)."""

from __future__ import annotations

import json

import pytest

from lmtune.data.records import Message, ToolCall
from lmtune.serve.chat_tools import answer_message, forced_call_prefix, prompt_tools, request_messages
from lmtune.serve.errors import APIError
from lmtune.serve.schemas import ChatRequest, ResponseFormat

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "city", "schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}}}


def request(**fields) -> ChatRequest:
    return ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields})


def test_tool_calls_come_back_in_openais_shape():
    text = 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    message, finish = answer_message(text, "stop", TOOLS, None)
    assert finish == "tool_calls" and message["content"] == "Checking." and message["role"] == "assistant"
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    two = text + '\n<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    assert len(answer_message(two, "stop", TOOLS, None)[0]["tool_calls"]) == 2
    assert len(answer_message(two, "stop", TOOLS, None, parallel=False)[0]["tool_calls"]) == 1  # parallel_tool_calls false
    # Without tools in the request the same text is plain content.
    assert answer_message(text, "stop", None, None) == ({"role": "assistant", "content": text, "refusal": None}, "stop")


@pytest.mark.parametrize(("text", "fmt", "content"), [
    ('{"city": "Oslo"}', SCHEMA, '{"city": "Oslo"}'),
    ('```json\n{"city": "Oslo"}\n```', SCHEMA, '{"city": "Oslo"}'),
    (' {"a": [1, 2]} ', {"type": "json_object"}, '{"a": [1, 2]}'),
])
def test_json_answers_that_parse_and_match_pass(text, fmt, content):
    message, finish = answer_message(text, "stop", None, ResponseFormat.model_validate(fmt))
    assert message["content"] == content and finish == "stop" and json.loads(content)


@pytest.mark.parametrize(("text", "fmt", "reason"), [
    ('{"city": ', SCHEMA, "not valid JSON (the answer reached max_tokens)"),
    ('{"town": "Oslo"}', SCHEMA, "does not match the schema: 'city' is a required property"),
    ("[1, 2]", {"type": "json_object"}, "JSON but not an object"),
])
def test_json_answers_that_fail_are_a_422_naming_why(text, fmt, reason):
    with pytest.raises(APIError) as caught:
        answer_message(text, "length" if text.endswith(" ") else "stop", None, ResponseFormat.model_validate(fmt))
    assert caught.value.status == 422 and caught.value.code == "response_format_not_met"
    assert reason in caught.value.message and caught.value.param == "response_format"


@pytest.mark.parametrize(("fields", "param"), [
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": TOOLS, "stream": True}, "stream"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
])
def test_what_lmtune_cannot_honour_is_a_400_naming_the_parameter(fields, param):
    with pytest.raises(APIError) as caught:
        prompt_tools(request(**fields))
    assert caught.value.status == 400 and caught.value.param == param


def test_tools_reach_the_prompt_unless_tool_choice_is_none():
    assert prompt_tools(request(tools=TOOLS)) == TOOLS
    assert prompt_tools(request(tools=TOOLS, tool_choice="auto")) == TOOLS
    assert prompt_tools(request(tools=TOOLS, tool_choice="none")) is None


NAMED = {"type": "function", "function": {"name": "get_weather"}}


def test_a_forced_call_starts_the_answer_and_must_be_completed():
    assert forced_call_prefix(request(tools=TOOLS), native=False) == ""
    assert forced_call_prefix(request(tools=TOOLS, tool_choice="required"), native=False) == '<tool_call>\n{"name": "'
    prefix = forced_call_prefix(request(tools=TOOLS, tool_choice=NAMED), native=False)
    assert prefix == '<tool_call>\n{"name": "get_weather", "arguments": '
    # The model writes the rest (here running on past the call); the call comes back in OpenAI's shape.
    message, finish = answer_message(prefix + '{"city": "Oslo"}}\n</tool_call> and more', "stop", TOOLS, None, prefix)
    assert finish == "tool_calls" and message["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}'
    with pytest.raises(APIError) as unmet:
        answer_message(prefix + '{"city": "Os', "length", TOOLS, None, prefix)
    assert unmet.value.status == 422 and unmet.value.code == "tool_choice_not_met" and "max_tokens" in unmet.value.message


@pytest.mark.parametrize(("choice", "native", "message"), [
    ("required", True, "writes calls its own way"),
    ({"type": "function", "function": {"name": "send_mail"}}, False, "not one of the request's tools"),
])
def test_a_call_lmtune_cannot_force_is_a_400(choice, native, message):
    with pytest.raises(APIError) as caught:
        forced_call_prefix(request(tools=TOOLS, tool_choice=choice), native)
    assert caught.value.status == 400 and caught.value.param == "tool_choice" and message in caught.value.message


def test_request_messages_carry_calls_and_results():
    body = request(messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "9 C"},
    ])
    assert request_messages(body) == [
        Message("user", "Weather in Oslo?"),
        Message("assistant", "", 1, (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'),)),
        Message("tool", "9 C", tool_call_id="call_1"),
    ]
    for bad, param in [({"role": "user"}, "messages[0].content"), ({"role": "tool", "content": "x"}, "messages[0].tool_call_id"),
                       ({"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {
                           "name": "f", "arguments": "[]"}}]}, "messages[0].tool_calls[0].function.arguments")]:
        with pytest.raises(APIError) as caught:
            request_messages(request(messages=[bad]))
        assert caught.value.status == 400 and caught.value.param == param
