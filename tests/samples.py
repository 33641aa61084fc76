"""Small realistic records in every supported shape, shared by pipeline and end-to-end tests."""

from __future__ import annotations

from typing import Any


def chat(model: str = "gpt-4o", route: str = "/chat", text: str = "Hello there.") -> dict[str, Any]:
    return {
        "timestamp": "2026-11-26T10:00:00Z",
        "route": route,
        "request": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
        "response": {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1764151200,
            "model": f"{model}-2024-08-06",
            "system_fingerprint": "fp_abc",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        },
    }


def responses(model: str = "gpt-4.1-mini", route: str = "/extract") -> dict[str, Any]:
    return {
        "route": route,
        "request": {"model": model, "input": "extract"},
        "response": {
            "id": "resp_1",
            "object": "response",
            "created_at": 1764151200,
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "model": f"{model}-2025-04-14",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "incomplete",
                    "content": [{"type": "output_text", "text": '{"a": ', "annotations": []}],
                },
            ],
            "usage": {
                "input_tokens": 20,
                "output_tokens": 16,
                "output_tokens_details": {"reasoning_tokens": 12},
            },
        },
    }


def anthropic(model: str = "claude-sonnet-4-5", route: str = "/chat") -> dict[str, Any]:
    return {
        "route": route,
        "request": {"model": model, "max_tokens": 1024},
        "response": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": f"{model}-20250929",
            "content": [
                {"type": "thinking", "thinking": "...", "signature": "x"},
                {"type": "text", "text": "Let me look that up."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 50, "output_tokens": 30},
        },
    }


def otel_span(model: str = "gpt-4o", route: str = "/agent") -> dict[str, Any]:
    """An OTLP-JSON span with attribute lists, int64 as strings."""
    return {
        "route": route,
        "name": f"chat {model}",
        "endTimeUnixNano": "1764151200000000000",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": model}},
            {"key": "gen_ai.response.model", "value": {"stringValue": f"{model}-2024-08-06"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "7"}},
            {
                "key": "gen_ai.response.finish_reasons",
                "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}},
            },
            {
                "key": "gen_ai.output.messages",
                "value": {
                    "stringValue": '[{"role":"assistant","parts":[{"type":"text",'
                    '"content":"Done."}],"finish_reason":"stop"}]'
                },
            },
        ],
    }


def litellm(model_group: str = "gpt-4o", route: str = "/chat") -> dict[str, Any]:
    body = chat(model_group, route)["response"]
    return {
        "id": "litellm-1",
        "call_type": "acompletion",
        "status": "success",
        "model": "azure/gpt-4o",
        "model_group": model_group,
        "custom_llm_provider": "azure",
        "prompt_tokens": 9,
        "completion_tokens": 3,
        "total_tokens": 12,
        "response_cost": 0.0001,
        "startTime": 1764151199.5,
        "endTime": 1764151200.1,
        "metadata": {"user_api_key_alias": "team-a"},
        "hidden_params": {},
        "response": body,
        "route": route,
    }
