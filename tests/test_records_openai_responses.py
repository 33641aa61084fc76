"""OpenAI Responses API bodies normalize exactly."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.records import Record, RejectedRecord, ToolCall, normalize

CREATED_AT = 1_741_476_542


def reasoning_item() -> dict[str, Any]:
    return {
        "id": "rs_67ccd2bf17f0819081ff3bb2cf6508e6",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Thinking about the capital..."}],
    }


def message_item(*parts: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    return {
        "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e6",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": list(parts),
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def responses_body(output: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": CREATED_AT,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "o4-mini-2025-04-16",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 36,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 123,
        },
        "user": None,
        "metadata": {},
    }
    body.update(overrides)
    return body


def envelope(response: dict[str, Any]) -> dict[str, Any]:
    return {
        "timestamp": 1_741_476_545.5,
        "route": "/ask",
        "request": {"model": "o4-mini", "input": "What is the capital of France?"},
        "response": response,
    }


def one(obj: Any, fmt: str = "auto") -> Record:
    records = normalize(obj, fmt)
    assert len(records) == 1
    return records[0]


def test_reasoning_then_message() -> None:
    body = responses_body([reasoning_item(), message_item(text_part("Paris."))])
    record = one(envelope(body))
    assert record.shape == "openai_responses"
    assert record.output_text == "Paris."  # the reasoning summary is not visible output
    assert record.finish_reason == "stop"
    assert record.raw_finish_reason == "completed"
    assert record.structured_refusal is False
    assert record.refusal_text is None
    assert record.requested_model == "o4-mini"
    assert record.served_model == "o4-mini-2025-04-16"
    assert record.system_fingerprint is None
    assert record.input_tokens == 36
    assert record.output_tokens == 87
    assert record.reasoning_tokens == 64
    assert record.tool_calls == ()
    assert record.choice_count == 1
    assert record.timestamp == 1_741_476_545.5


def test_bare_response_timestamp_from_created_at() -> None:
    record = one(responses_body([message_item(text_part("Hi"))]))
    assert record.timestamp == CREATED_AT
    assert record.requested_model is None


def test_several_text_parts_and_messages_are_joined() -> None:
    body = responses_body(
        [
            message_item(text_part("Line one. ")),
            message_item(text_part("Line two."), text_part(" Line three.")),
        ]
    )
    assert one(body).output_text == "Line one. Line two. Line three."


def test_refusal_part() -> None:
    refusal = "I'm sorry, but I can't assist with that."
    body = responses_body([message_item({"type": "refusal", "refusal": refusal})])
    record = one(envelope(body))
    assert record.output_text == ""
    assert record.structured_refusal is True
    assert record.refusal_text == refusal
    assert record.finish_reason == "refusal"
    assert record.raw_finish_reason == "refusal"


def test_function_call_items() -> None:
    body = responses_body(
        [
            reasoning_item(),
            {
                "type": "function_call",
                "id": "fc_67ca09c6bedc8190a7abfec07b1a1332",
                "call_id": "call_unLAR8MvFNptuiZK6K6HCy5k",
                "name": "get_current_weather",
                "arguments": '{"location":"Boston, MA","unit":"celsius"}',
                "status": "completed",
            },
        ]
    )
    record = one(body)
    assert record.output_text == ""
    assert record.finish_reason == "tool_call"
    assert record.raw_finish_reason == "tool_call"
    assert record.tool_calls == (
        ToolCall(
            name="get_current_weather", arguments='{"location":"Boston, MA","unit":"celsius"}'
        ),
    )


def test_custom_and_mcp_tool_calls() -> None:
    body = responses_body(
        [
            {"type": "custom_tool_call", "call_id": "c1", "name": "code_exec", "input": "print(1)"},
            {
                "type": "mcp_call",
                "id": "mcp_1",
                "server_label": "deepwiki",
                "name": "ask_question",
                "arguments": '{"q":"x"}',
                "output": "answer",
            },
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        ]
    )
    assert one(body).tool_calls == (
        ToolCall(name="code_exec", arguments="print(1)"),
        ToolCall(name="ask_question", arguments='{"q":"x"}'),
    )


def test_incomplete_max_output_tokens() -> None:
    body = responses_body(
        [reasoning_item(), message_item(text_part("The answer is"), status="incomplete")],
        status="incomplete",
        incomplete_details={"reason": "max_output_tokens"},
        max_output_tokens=64,
    )
    record = one(body)
    assert record.output_text == "The answer is"
    assert record.finish_reason == "length"
    assert record.raw_finish_reason == "max_output_tokens"
    assert record.structured_refusal is False


def test_incomplete_max_output_tokens_spent_on_reasoning_only() -> None:
    body = responses_body(
        [reasoning_item()],
        status="incomplete",
        incomplete_details={"reason": "max_output_tokens"},
        usage={
            "input_tokens": 20,
            "output_tokens": 300,
            "output_tokens_details": {"reasoning_tokens": 300},
            "total_tokens": 320,
        },
    )
    record = one(body)
    assert record.output_text == ""
    assert record.finish_reason == "length"
    assert record.output_tokens == 300
    assert record.reasoning_tokens == 300


def test_incomplete_content_filter() -> None:
    body = responses_body(
        [message_item(text_part("Partial"), status="incomplete")],
        status="incomplete",
        incomplete_details={"reason": "content_filter"},
    )
    record = one(body)
    assert record.finish_reason == "content_filter"
    assert record.raw_finish_reason == "content_filter"
    assert record.structured_refusal is True
    assert record.refusal_text is None


def test_failed_response() -> None:
    body = responses_body(
        [], status="failed", error={"code": "server_error", "message": "boom"}, usage=None
    )
    record = one(body)
    assert record.output_text == ""
    assert record.finish_reason == "error"
    assert record.raw_finish_reason == "failed"
    assert record.input_tokens is None
    assert record.output_tokens is None


def test_cancelled_and_in_progress_are_other() -> None:
    assert one(responses_body([], status="cancelled")).finish_reason == "other"
    assert one(responses_body([], status="in_progress")).finish_reason == "other"
    incomplete = one(responses_body([], status="incomplete"))
    assert (incomplete.finish_reason, incomplete.raw_finish_reason) == ("other", "incomplete")


def test_detected_without_object_field() -> None:
    body = responses_body([message_item(text_part("ok"))])
    del body["object"]
    assert one(body).shape == "openai_responses"


def test_streaming_completed_event_wraps_the_response() -> None:
    event = {
        "type": "response.completed",
        "sequence_number": 42,
        "response": responses_body([message_item(text_part("Done."))]),
    }
    record = one(event)
    assert record.shape == "openai_responses"
    assert record.output_text == "Done."


def test_output_not_a_list_is_missing_output() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize(responses_body(None))  # type: ignore[arg-type]
    assert caught.value.reason == "missing_output"


def test_junk_items_are_ignored() -> None:
    body = responses_body([None, 5, "x", message_item(None, text_part("ok"), {"type": "refusal"})])  # type: ignore[arg-type]
    record = one(body, fmt="openai_responses")
    assert record.output_text == "ok"
    assert record.structured_refusal is False


def test_forced_format_rejects_other_shapes() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize({"choices": [{"message": {"content": "x"}}]}, fmt="openai_responses")
    assert caught.value.reason == "unknown_format"
