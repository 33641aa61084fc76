"""Anthropic Messages API bodies normalize exactly."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.records import Record, RejectedRecord, ToolCall, normalize


def message(
    content: list[Any], stop_reason: str | None = "end_turn", **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 2095,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 503,
            "service_tier": "standard",
        },
    }
    body.update(overrides)
    return body


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def envelope(response: dict[str, Any], model: str = "claude-sonnet-4-0") -> dict[str, Any]:
    return {
        "timestamp": 1_750_000_000_123,  # epoch milliseconds
        "route": "/summarize",
        "request": {
            "model": model,
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Summarize this."}],
        },
        "response": response,
    }


def one(obj: Any, fmt: str = "auto") -> Record:
    records = normalize(obj, fmt)
    assert len(records) == 1
    return records[0]


def test_text_answer() -> None:
    record = one(envelope(message([text("Here is the summary.")])))
    assert record.shape == "anthropic"
    assert record.output_text == "Here is the summary."
    assert record.finish_reason == "stop"
    assert record.raw_finish_reason == "end_turn"
    assert record.structured_refusal is False
    assert record.refusal_text is None
    assert record.requested_model == "claude-sonnet-4-0"
    assert record.served_model == "claude-sonnet-4-20250514"
    assert record.system_fingerprint is None
    assert record.input_tokens == 2095
    assert record.output_tokens == 503
    assert record.reasoning_tokens is None
    assert record.tool_calls == ()
    assert record.choice_count == 1
    assert record.timestamp == pytest.approx(1_750_000_000.123)


def test_bare_message_has_no_timestamp() -> None:
    record = one(message([text("Hi")]))
    assert record.timestamp is None
    assert record.requested_model is None


def test_thinking_blocks_are_not_output() -> None:
    content = [
        {
            "type": "thinking",
            "thinking": "Let me work through this step by step...",
            "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLL",
        },
        {
            "type": "redacted_thinking",
            "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8",
        },
        text("The answer is 42."),
    ]
    record = one(message(content))
    assert record.output_text == "The answer is 42."


def test_several_text_blocks_are_joined() -> None:
    record = one(message([text("Part one. "), text("Part two.")]))
    assert record.output_text == "Part one. Part two."


def test_tool_use() -> None:
    content = [
        text("I'll check the weather."),
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA", "unit": "celsius"},
        },
    ]
    record = one(envelope(message(content, stop_reason="tool_use")))
    assert record.output_text == "I'll check the weather."
    assert record.finish_reason == "tool_call"
    assert record.raw_finish_reason == "tool_use"
    assert record.tool_calls == (
        ToolCall(name="get_weather", arguments='{"location":"San Francisco, CA","unit":"celsius"}'),
    )


def test_server_tool_use_and_empty_input() -> None:
    content = [
        {
            "type": "server_tool_use",
            "id": "srvtoolu_1",
            "name": "web_search",
            "input": {"query": "x"},
        },
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
        {"type": "tool_use", "id": "toolu_2", "name": "noop", "input": {}},
        text("Done."),
    ]
    record = one(message(content))
    assert record.tool_calls == (
        ToolCall(name="web_search", arguments='{"query":"x"}'),
        ToolCall(name="noop", arguments="{}"),
    )


def test_tool_input_with_huge_integer_still_serializes() -> None:
    content = [{"type": "tool_use", "id": "t", "name": "big", "input": {"n": 2**80}}]
    record = one(message(content, stop_reason="tool_use"))
    assert record.tool_calls == (ToolCall(name="big", arguments='{"n":1208925819614629174706176}'),)


def test_max_tokens_truncation() -> None:
    record = one(message([text("The first three steps are: 1.")], stop_reason="max_tokens"))
    assert record.finish_reason == "length"
    assert record.raw_finish_reason == "max_tokens"


def test_refusal_stop_reason() -> None:
    record = one(envelope(message([], stop_reason="refusal")))
    assert record.output_text == ""
    assert record.finish_reason == "refusal"
    assert record.raw_finish_reason == "refusal"
    assert record.structured_refusal is True
    assert record.refusal_text is None


def test_stop_sequence() -> None:
    body = message([text("value: 12")], stop_reason="stop_sequence", stop_sequence="\n\n")
    record = one(body)
    assert record.finish_reason == "stop"
    assert record.raw_finish_reason == "stop_sequence"


def test_pause_turn_is_other() -> None:
    record = one(message([text("Searching...")], stop_reason="pause_turn"))
    assert record.finish_reason == "other"
    assert record.raw_finish_reason == "pause_turn"


def test_context_window_exceeded_is_length() -> None:
    record = one(message([text("...")], stop_reason="model_context_window_exceeded"))
    assert record.finish_reason == "length"


def test_null_stop_reason() -> None:
    record = one(message([text("partial")], stop_reason=None))
    assert record.finish_reason == "other"
    assert record.raw_finish_reason is None


def test_cached_prompt_tokens_count_as_input() -> None:
    body = message([text("ok")])
    body["usage"] = {
        "input_tokens": 12,
        "cache_creation_input_tokens": 1800,
        "cache_read_input_tokens": 40_000,
        "output_tokens": 7,
    }
    record = one(body)
    assert record.input_tokens == 41_812
    assert record.output_tokens == 7


def test_missing_usage() -> None:
    body = message([text("ok")])
    del body["usage"]
    record = one(body)
    assert record.input_tokens is None
    assert record.output_tokens is None


def test_bedrock_body_without_type_field() -> None:
    body = message([text("From Bedrock.")], model="anthropic.claude-3-5-sonnet-20240620-v1:0")
    del body["type"]
    record = one(body)
    assert record.shape == "anthropic"
    assert record.served_model == "anthropic.claude-3-5-sonnet-20240620-v1:0"


def test_non_dict_blocks_are_ignored() -> None:
    record = one(message([None, "loose string", 3, text("kept")]))
    assert record.output_text == "kept"


def test_forced_anthropic_rejects_content_string() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize({"type": "message", "content": "not a list"}, fmt="anthropic")
    assert caught.value.reason == "unknown_format"


def test_error_body_is_unknown_format() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(RejectedRecord) as caught:
        normalize(envelope(body))
    assert caught.value.reason == "unknown_format"
