"""Langfuse GENERATION observations normalize exactly."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.records import Record, RejectedRecord, ToolCall, normalize

END = "2025-01-15T10:42:18.456Z"
END_SECONDS = 1_736_937_738.456


def generation(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "b3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
        "traceId": "7d2a9e4b-1c3f-4e5a-9b8c-6d7e8f9a0b1c",
        "type": "GENERATION",
        "name": "OpenAI-generation",
        "startTime": "2025-01-15T10:42:17.123Z",
        "endTime": END,
        "completionStartTime": "2025-01-15T10:42:17.612Z",
        "model": "gpt-4o-2024-08-06",
        "modelId": "clx1abcde0000",
        "modelParameters": {"temperature": "0.2", "max_tokens": "512"},
        "input": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Name a prime number."},
        ],
        "version": None,
        "metadata": {"environment": "prod"},
        "output": {"role": "assistant", "content": "7 is a prime number."},
        "usage": {"input": 24, "output": 8, "total": 32, "unit": "TOKENS"},
        "level": "DEFAULT",
        "statusMessage": None,
        "parentObservationId": None,
        "promptId": None,
        "promptName": None,
        "promptVersion": None,
        "usageDetails": {"input": 24, "output": 8, "total": 32},
        "costDetails": {"input": 0.00006, "output": 0.00008, "total": 0.00014},
        "environment": "default",
        "latency": 1.333,
        "timeToFirstToken": 0.489,
    }
    body.update(overrides)
    return body


def one(obj: Any, fmt: str = "auto") -> Record:
    records = normalize(obj, fmt)
    assert len(records) == 1
    return records[0]


def test_assistant_message_output() -> None:
    record = one(generation())
    assert record.shape == "langfuse"
    assert record.output_text == "7 is a prime number."
    assert record.finish_reason == "other"  # Langfuse does not record one
    assert record.raw_finish_reason is None
    assert record.structured_refusal is False
    assert record.refusal_text is None
    assert record.requested_model == "gpt-4o-2024-08-06"
    assert record.served_model == "gpt-4o-2024-08-06"
    assert record.input_tokens == 24
    assert record.output_tokens == 8
    assert record.reasoning_tokens is None
    assert record.tool_calls == ()
    assert record.choice_count == 1
    assert record.timestamp == pytest.approx(END_SECONDS)


def test_usage_details_types_are_additive() -> None:
    details = {
        "input": 1000,
        "input_cached_tokens": 3000,
        "output": 200,
        "output_reasoning_tokens": 600,
        "total": 4800,
    }
    record = one(generation(model="o3-mini", usageDetails=details))
    assert record.input_tokens == 4000
    assert record.output_tokens == 800
    assert record.reasoning_tokens == 600


def test_older_export_with_usage_only() -> None:
    body = generation(usage={"promptTokens": 11, "completionTokens": 5, "totalTokens": 16})
    del body["usageDetails"]
    record = one(body)
    assert (record.input_tokens, record.output_tokens) == (11, 5)


def test_plain_string_output() -> None:
    assert one(generation(output="Seven.")).output_text == "Seven."


def test_refusal_message() -> None:
    output = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    record = one(generation(output=output))
    assert record.output_text == ""
    assert record.structured_refusal is True
    assert record.refusal_text == "I can't help with that."
    assert record.finish_reason == "refusal"


def test_tool_calls_in_message() -> None:
    output = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            }
        ],
    }
    record = one(generation(output=output))
    assert record.tool_calls == (ToolCall(name="get_weather", arguments='{"city":"Oslo"}'),)


def test_finish_reason_from_metadata() -> None:
    record = one(generation(metadata={"finish_reason": "length"}))
    assert record.finish_reason == "length"
    assert record.raw_finish_reason == "length"


def test_whole_chat_completion_as_output() -> None:
    output = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_abc",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    body = generation(output=output, model="gpt-4o")
    del body["usageDetails"]
    del body["usage"]
    record = one(body)
    assert record.shape == "langfuse"
    assert record.output_text == "Hi"
    assert record.finish_reason == "length"
    assert record.raw_finish_reason == "length"
    assert record.requested_model == "gpt-4o"
    assert record.served_model == "gpt-4o-2024-08-06"
    assert record.system_fingerprint == "fp_abc"
    assert (record.input_tokens, record.output_tokens) == (3, 1)


def test_whole_anthropic_message_as_output() -> None:
    output = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "x"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }
    record = one(generation(output=output, model="claude-3-5-haiku-latest"))
    assert record.output_text == "Checking."
    assert record.finish_reason == "tool_call"
    assert record.tool_calls == (ToolCall(name="search", arguments='{"q":"x"}'),)
    assert record.requested_model == "claude-3-5-haiku-latest"
    assert record.served_model == "claude-3-5-haiku-20241022"
    assert (record.input_tokens, record.output_tokens) == (24, 8)  # Langfuse usage wins


def test_responses_output_items_as_output() -> None:
    output = [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Answer.", "annotations": []}],
        },
    ]
    record = one(generation(output=output))
    assert record.output_text == "Answer."
    refusal_item = {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "refusal", "refusal": "No."}],
    }
    refused = one(generation(output=refusal_item))
    assert refused.structured_refusal is True
    assert refused.refusal_text == "No."
    assert refused.finish_reason == "refusal"


def test_list_of_messages_picks_the_last_assistant() -> None:
    output = [
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "calc"}}]},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "It is 42."},
    ]
    record = one(generation(output=output))
    assert record.output_text == "It is 42."
    assert record.tool_calls == ()


def test_list_of_content_parts_is_text() -> None:
    output = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    assert one(generation(output=output)).output_text == "Hello there"


def test_structured_json_output_kept_as_json_text() -> None:
    record = one(generation(output={"name": "Ada", "born": 1815}))
    assert record.output_text == '{"name":"Ada","born":1815}'


def test_failed_generation_is_an_error_record() -> None:
    body = generation(output=None, level="ERROR", statusMessage="Rate limit reached")
    body["usageDetails"] = {}
    body["usage"] = {"input": 0, "output": 0, "total": 0, "unit": "TOKENS"}
    record = one(body)
    assert record.finish_reason == "error"
    assert record.output_text == ""


def test_null_output_without_error_is_missing_output() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize(generation(output=None))
    assert caught.value.reason == "missing_output"


def test_timestamp_falls_back_to_start_time() -> None:
    record = one(generation(endTime=None))
    assert record.timestamp == pytest.approx(1_736_937_737.123)


def test_span_observation_is_not_langfuse() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize(generation(type="SPAN"), fmt="langfuse")
    assert caught.value.reason == "unknown_format"
