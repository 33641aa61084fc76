"""LiteLLM StandardLoggingPayload records normalize exactly."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.records import Record, RejectedRecord, ToolCall, normalize
from exporter.records.labels import StreamLabeler

START = 1_735_000_000.125
END = 1_735_000_002.75


def model_response(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-2a1f5c3e-7b5e-4f0e-9d3e-1b2c3d4e5f60",
        "created": 1_735_000_002,
        "model": "claude-3-5-sonnet-20241022",
        "object": "chat.completion",
        "system_fingerprint": None,
        "choices": [
            {
                "finish_reason": "stop",
                "index": 0,
                "message": {
                    "content": "Your order ships tomorrow.",
                    "role": "assistant",
                    "tool_calls": None,
                    "function_call": None,
                },
            }
        ],
        "usage": {"completion_tokens": 9, "prompt_tokens": 120, "total_tokens": 129},
    }
    body.update(overrides)
    return body


def payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "2a1f5c3e-7b5e-4f0e-9d3e-1b2c3d4e5f60",
        "trace_id": "9c1e8f6a-0000-4000-8000-000000000001",
        "call_type": "acompletion",
        "stream": False,
        "response_cost": 0.000495,
        "response_cost_failure_debug_info": None,
        "status": "success",
        "custom_llm_provider": "anthropic",
        "total_tokens": 129,
        "prompt_tokens": 120,
        "completion_tokens": 9,
        "startTime": START,
        "endTime": END,
        "completionStartTime": END,
        "response_time": 2.625,
        "model_map_information": {
            "model_map_key": "claude-3-5-sonnet-20241022",
            "model_map_value": None,
        },
        "model": "claude-3-5-sonnet-20241022",
        "model_id": "a8b1c2d3e4",
        "model_group": "support-model",
        "api_base": "https://api.anthropic.com/v1/messages",
        "metadata": {"user_api_key_alias": "team-support", "requester_metadata": {}},
        "cache_hit": None,
        "cache_key": None,
        "saved_cache_cost": 0.0,
        "request_tags": ["support"],
        "end_user": None,
        "requester_ip_address": "10.0.0.7",
        "messages": [{"role": "user", "content": "When does my order ship?"}],
        "response": model_response(),
        "error_str": None,
        "error_information": None,
        "model_parameters": {"temperature": 0.3, "max_tokens": 512},
        "hidden_params": {
            "model_id": "a8b1c2d3e4",
            "cache_key": None,
            "api_base": "https://api.anthropic.com/v1/messages",
            "response_cost": 0.000495,
            "additional_headers": {},
        },
    }
    body.update(overrides)
    return body


def one(obj: Any, fmt: str = "auto") -> Record:
    records = normalize(obj, fmt)
    assert len(records) == 1
    return records[0]


def test_success_payload() -> None:
    record = one(payload())
    assert record.shape == "litellm"
    assert record.output_text == "Your order ships tomorrow."
    assert record.finish_reason == "stop"
    assert record.raw_finish_reason == "stop"
    assert record.structured_refusal is False
    assert record.refusal_text is None
    assert record.requested_model == "support-model"  # the router alias the app asked for
    assert record.served_model == "claude-3-5-sonnet-20241022"
    assert record.system_fingerprint is None
    assert record.input_tokens == 120
    assert record.output_tokens == 9
    assert record.tool_calls == ()
    assert record.choice_count == 1
    assert record.timestamp == END


def test_default_model_label_is_the_model_group_not_the_served_version() -> None:
    labels = StreamLabeler({"model": "request.model|response.model"})
    assert labels.key(one(payload())) == ("support-model",)


def test_top_level_token_counts_win_over_inner_usage() -> None:
    record = one(payload(prompt_tokens=130, completion_tokens=11))
    assert (record.input_tokens, record.output_tokens) == (130, 11)


def test_inner_usage_used_when_top_level_counts_absent() -> None:
    body = payload()
    del body["prompt_tokens"]
    del body["completion_tokens"]
    record = one(body)
    assert (record.input_tokens, record.output_tokens) == (120, 9)


def test_sdk_payload_without_model_group_uses_model() -> None:
    record = one(
        payload(
            model_group=None, model="gpt-4o", response=model_response(model="gpt-4o-2024-08-06")
        )
    )
    assert record.requested_model == "gpt-4o"
    assert record.served_model == "gpt-4o-2024-08-06"


def test_served_model_falls_back_to_payload_model() -> None:
    record = one(payload(response=model_response(model=None)))
    assert record.served_model == "claude-3-5-sonnet-20241022"


def test_truncated_response_with_tool_calls() -> None:
    response = model_response()
    response["choices"][0]["finish_reason"] = "tool_calls"
    response["choices"][0]["message"] = {
        "content": None,
        "role": "assistant",
        "tool_calls": [
            {
                "id": "toolu_01",
                "type": "function",
                "function": {"name": "track_order", "arguments": '{"order": "A-1"}'},
            }
        ],
        "function_call": None,
    }
    record = one(payload(response=response))
    assert record.finish_reason == "tool_call"
    assert record.tool_calls == (ToolCall(name="track_order", arguments='{"order": "A-1"}'),)


def test_failure_payload_is_an_error_record() -> None:
    body = payload(
        status="failure",
        response={},
        prompt_tokens=120,
        completion_tokens=0,
        total_tokens=120,
        response_cost=0.0,
        error_str="litellm.RateLimitError: AnthropicException - rate limit exceeded",
        error_information={
            "error_code": "429",
            "error_class": "RateLimitError",
            "llm_provider": "anthropic",
            "error_message": "rate limit exceeded",
        },
    )
    record = one(body)
    assert record.shape == "litellm"
    assert record.output_text == ""
    assert record.finish_reason == "error"
    assert record.raw_finish_reason == "failure"
    assert record.requested_model == "support-model"
    assert record.served_model == "claude-3-5-sonnet-20241022"
    assert record.input_tokens == 120
    assert record.output_tokens is None  # a placeholder 0 is not a measurement
    assert record.timestamp == END


def test_failure_payload_with_null_or_error_response() -> None:
    assert one(payload(status="failure", response=None)).finish_reason == "error"
    body = payload(status="failure", response={"error": {"message": "boom"}})
    assert one(body).finish_reason == "error"


def test_plain_string_response() -> None:
    record = one(payload(response="Just text."))
    assert record.output_text == "Just text."
    assert record.requested_model == "support-model"


def test_responses_api_passthrough() -> None:
    response = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_735_000_001,
        "status": "completed",
        "model": "gpt-4.1-2025-04-14",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Hi there", "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8},
    }
    record = one(
        payload(call_type="aresponses", response=response, model="gpt-4.1", model_group="gpt-4.1")
    )
    assert record.shape == "litellm"
    assert record.output_text == "Hi there"
    assert record.served_model == "gpt-4.1-2025-04-14"


def test_missing_response_is_missing_output() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize(payload(response=None))
    assert caught.value.reason == "missing_output"


def test_embedding_response_is_unknown_format() -> None:
    embedding = {"object": "list", "data": [{"embedding": [0.1], "index": 0}], "model": "x"}
    with pytest.raises(RejectedRecord) as caught:
        normalize(payload(call_type="aembedding", response=embedding))
    assert caught.value.reason == "unknown_format"


def test_forced_litellm_requires_response_key() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize({"model": "x", "call_type": "acompletion"}, fmt="litellm")
    assert caught.value.reason == "unknown_format"


def test_forced_litellm_with_few_markers() -> None:
    minimal = {"model": "gpt-4o", "response": model_response(model="gpt-4o-2024-08-06")}
    record = one(minimal, fmt="litellm")
    assert record.shape == "litellm"
    assert record.requested_model == "gpt-4o"
