"""OpenTelemetry GenAI spans, events and log records normalize exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exporter.records import Record, RejectedRecord, ToolCall, normalize

END_NANOS = "1727000000500000000"
END_SECONDS = 1_727_000_000.5


def one(obj: Any, fmt: str = "auto") -> Record:
    records = normalize(obj, fmt)
    assert len(records) == 1
    return records[0]


def otlp_value(value: Any) -> dict[str, Any]:
    """Encode a Python value the way OTLP-JSON does (int64 as a string)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [otlp_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": otlp_attributes(value)}}
    return {"stringValue": value}


def otlp_attributes(mapping: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": otlp_value(value)} for key, value in mapping.items()]


OUTPUT_MESSAGES = [
    {
        "role": "assistant",
        "parts": [
            {"type": "reasoning", "content": "The user greets me."},
            {"type": "text", "content": "Hello! How can I help?"},
        ],
        "finish_reason": "stop",
    }
]


def current_attributes(**extra: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.request.max_tokens": 200,
        "gen_ai.response.id": "chatcmpl-123",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 97,
        "gen_ai.usage.output_tokens": 52,
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]
        ),
        "gen_ai.output.messages": json.dumps(OUTPUT_MESSAGES),
        "openai.response.system_fingerprint": "fp_44709d6fcb",
    }
    attributes.update(extra)
    return attributes


def span(attributes: Any, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "name": "chat gpt-4o",
        "kind": 3,
        "startTimeUnixNano": "1727000000000000000",
        "endTimeUnixNano": END_NANOS,
        "attributes": attributes,
        "status": {},
    }
    body.update(fields)
    return body


def test_current_output_messages_as_json_string() -> None:
    record = one(span(current_attributes()))
    assert record.shape == "otel_genai"
    assert record.output_text == "Hello! How can I help?"
    assert record.finish_reason == "stop"
    assert record.raw_finish_reason == "stop"
    assert record.structured_refusal is False
    assert record.refusal_text is None
    assert record.requested_model == "gpt-4o"
    assert record.served_model == "gpt-4o-2024-08-06"
    assert record.system_fingerprint == "fp_44709d6fcb"
    assert record.input_tokens == 97
    assert record.output_tokens == 52
    assert record.reasoning_tokens is None
    assert record.tool_calls == ()
    assert record.choice_count == 1
    assert record.timestamp == END_SECONDS


def test_current_output_messages_as_array_with_tool_call() -> None:
    messages = [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": "call_VSPygqKTWdrhaFErNvMV18Yl",
                    "name": "get_weather",
                    "arguments": {"location": "Paris"},
                }
            ],
            "finish_reason": "tool_call",
        }
    ]
    attributes = current_attributes(
        **{
            "gen_ai.output.messages": messages,
            "gen_ai.response.finish_reasons": ["tool_call"],
            "gen_ai.usage.reasoning.output_tokens": 12,
        }
    )
    record = one(span(attributes))
    assert record.output_text == ""
    assert record.finish_reason == "tool_call"
    assert record.raw_finish_reason == "tool_call"
    assert record.tool_calls == (ToolCall(name="get_weather", arguments='{"location":"Paris"}'),)
    assert record.reasoning_tokens == 12


def test_several_output_messages_count_as_choices() -> None:
    messages = [
        {"role": "assistant", "parts": [{"type": "text", "content": "A"}], "finish_reason": "stop"},
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "B"}],
            "finish_reason": "length",
        },
    ]
    record = one(span(current_attributes(**{"gen_ai.output.messages": messages})))
    assert record.output_text == "A"
    assert record.choice_count == 2


def test_finish_reason_falls_back_to_span_attribute() -> None:
    messages = [{"role": "assistant", "parts": [{"type": "text", "content": "cut"}]}]
    attributes = current_attributes(
        **{"gen_ai.output.messages": messages, "gen_ai.response.finish_reasons": ["length"]}
    )
    record = one(span(attributes))
    assert record.finish_reason == "length"
    assert record.raw_finish_reason == "length"


def test_finish_reasons_as_json_string_or_plain_string() -> None:
    messages = [{"role": "assistant", "parts": [{"type": "text", "content": "x"}]}]
    as_json = current_attributes(
        **{
            "gen_ai.output.messages": messages,
            "gen_ai.response.finish_reasons": '["content_filter"]',
        }
    )
    assert one(span(as_json)).finish_reason == "content_filter"
    plain = current_attributes(
        **{"gen_ai.output.messages": messages, "gen_ai.response.finish_reasons": "length"}
    )
    assert one(span(plain)).finish_reason == "length"


def test_otlp_json_attribute_list_with_string_int64() -> None:
    attributes = otlp_attributes(current_attributes())
    tokens = next(a for a in attributes if a["key"] == "gen_ai.usage.input_tokens")
    assert tokens["value"] == {"intValue": "97"}
    record = one(span(attributes))
    assert record.output_text == "Hello! How can I help?"
    assert record.input_tokens == 97
    assert record.output_tokens == 52
    assert record.requested_model == "gpt-4o"
    assert record.finish_reason == "stop"


def test_otlp_output_messages_as_structured_array_value() -> None:
    attributes = otlp_attributes(current_attributes(**{"gen_ai.output.messages": OUTPUT_MESSAGES}))
    record = one(span(attributes))
    assert record.output_text == "Hello! How can I help?"


def openllmetry_attributes(**extra: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "llm.request.type": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.openai.system_fingerprint": "fp_x",
        "gen_ai.openai.response.system_fingerprint": "fp_0ba0d124f1",
        "gen_ai.usage.prompt_tokens": 82,
        "gen_ai.usage.completion_tokens": 17,
        "llm.usage.total_tokens": 99,
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": "What's the weather in Paris and Rome?",
        "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.tool_calls.0.id": "call_a",
        "gen_ai.completion.0.tool_calls.0.name": "get_weather",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"city": "Paris"}',
        "gen_ai.completion.0.tool_calls.1.id": "call_b",
        "gen_ai.completion.0.tool_calls.1.name": "get_weather",
        "gen_ai.completion.0.tool_calls.1.arguments": '{"city": "Rome"}',
    }
    attributes.update(extra)
    return attributes


def test_openllmetry_indexed_attributes_with_tool_calls() -> None:
    record = one(span(openllmetry_attributes()))
    assert record.output_text == ""
    assert record.finish_reason == "tool_call"
    assert record.raw_finish_reason == "tool_calls"
    assert record.tool_calls == (
        ToolCall(name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(name="get_weather", arguments='{"city": "Rome"}'),
    )
    assert record.requested_model == "gpt-4o-mini"
    assert record.served_model == "gpt-4o-mini-2024-07-18"
    assert record.system_fingerprint == "fp_0ba0d124f1"
    assert record.input_tokens == 82
    assert record.output_tokens == 17
    assert record.choice_count == 1


def test_refusal_part_of_output_messages() -> None:
    # OpenLLMetry writes OpenAI's `refusal` field as a part of its own (content null)
    refusal = "I'm sorry, but I can't assist with that request."
    messages = [{"role": "assistant", "parts": [{"type": "refusal", "content": refusal}]}]
    record = one(span(current_attributes(**{"gen_ai.output.messages": json.dumps(messages)})))
    assert (record.output_text, record.refusal_text) == ("", refusal)
    assert record.structured_refusal is True
    assert (record.finish_reason, record.raw_finish_reason) == ("refusal", "stop")


def test_anthropic_stop_reason_when_no_finish_reasons() -> None:
    # the anthropic SDK's own spans record the stop reason only as anthropic.message.stop_reason
    messages = [{"role": "assistant", "parts": [{"type": "text", "content": "Cut sh"}]}]

    def attributes(stop_reason: str, **extra: Any) -> dict[str, Any]:
        found = current_attributes(
            **{"gen_ai.output.messages": messages, "anthropic.message.stop_reason": stop_reason}
        )
        del found["gen_ai.response.finish_reasons"]
        return {**found, **extra}

    record = one(span(attributes("max_tokens")))
    assert (record.finish_reason, record.raw_finish_reason) == ("length", "max_tokens")
    assert one(span(attributes("refusal"))).structured_refusal is True
    both = attributes("max_tokens", **{"gen_ai.response.finish_reasons": ["stop"]})
    assert one(span(both)).raw_finish_reason == "stop"  # finish_reasons first


def test_openllmetry_text_and_several_choices() -> None:
    attributes = {
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.completion.0.finish_reason": "stop",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "First answer.",
        "gen_ai.completion.1.finish_reason": "length",
        "gen_ai.completion.1.role": "assistant",
        "gen_ai.completion.1.content": "Second",
    }
    record = one(span(attributes))
    assert record.output_text == "First answer."
    assert record.finish_reason == "stop"
    assert record.choice_count == 2


def test_openllmetry_refusal_without_content() -> None:
    attributes = {
        "gen_ai.system": "openai",
        "gen_ai.completion.0.finish_reason": "stop",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.refusal": "I can't help with that.",
    }
    record = one(span(attributes))
    assert record.output_text == ""
    assert record.structured_refusal is True
    assert record.refusal_text == "I can't help with that."
    assert record.finish_reason == "refusal"
    assert record.raw_finish_reason == "stop"


def test_openllmetry_legacy_function_call() -> None:
    attributes = {
        "gen_ai.system": "openai",
        "gen_ai.completion.0.finish_reason": "function_call",
        "gen_ai.completion.0.function_call.name": "lookup",
        "gen_ai.completion.0.function_call.arguments": '{"id": 1}',
    }
    assert one(span(attributes)).tool_calls == (ToolCall(name="lookup", arguments='{"id": 1}'),)


def test_openllmetry_anthropic_thinking_is_not_the_answer() -> None:
    # The Anthropic instrumentation writes a thinking block as completion 0 with
    # role "thinking" and the visible answer as completion 1.
    attributes = {
        "gen_ai.system": "Anthropic",
        "gen_ai.request.model": "claude-3-7-sonnet-latest",
        "gen_ai.response.model": "claude-3-7-sonnet-20250219",
        "gen_ai.usage.input_tokens": 40,
        "gen_ai.usage.completion_tokens": 310,
        "gen_ai.completion.0.finish_reason": "end_turn",
        "gen_ai.completion.0.role": "thinking",
        "gen_ai.completion.0.content": "Let me think about how to phrase this...",
        "gen_ai.completion.1.role": "assistant",
        "gen_ai.completion.1.content": "Here is my answer.",
    }
    record = one(span(attributes))
    assert record.output_text == "Here is my answer."
    assert record.finish_reason == "stop"
    assert record.raw_finish_reason == "end_turn"
    assert record.choice_count == 1
    assert record.input_tokens == 40
    assert record.output_tokens == 310


def test_flat_attribute_record() -> None:
    flat = current_attributes()
    flat["timestamp"] = "2024-09-22T10:15:30Z"
    record = one(flat)
    assert record.output_text == "Hello! How can I help?"
    assert record.timestamp == 1_727_000_130.0


def test_span_with_gen_ai_attributes_but_no_output_is_missing_output() -> None:
    attributes = {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3"}
    with pytest.raises(RejectedRecord) as caught:
        normalize(span(attributes))
    assert caught.value.reason == "missing_output"


def test_forced_otel_rejects_objects_without_gen_ai() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize({"name": "GET /", "attributes": {"http.method": "GET"}}, fmt="otel_genai")
    assert caught.value.reason == "unknown_format"


def test_garbage_output_messages_do_not_crash() -> None:
    attributes = current_attributes(**{"gen_ai.output.messages": "[not json"})
    with pytest.raises(RejectedRecord):
        normalize(span(attributes))
    weird = current_attributes(**{"gen_ai.output.messages": [None, 5, {"parts": "x"}]})
    record = one(span(weird))
    assert record.output_text == ""
    assert record.choice_count == 3
