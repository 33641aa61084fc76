"""Valid records of every shape and a strategy for arbitrary JSON, shared by the record tests.

A plain module, not a test module: test modules import their shared data from here, never from
each other.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_727_000_000,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi", "refusal": None},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}
RESPONSES = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1_727_000_000,
    "status": "incomplete",
    "incomplete_details": {"reason": "max_output_tokens"},
    "model": "o4-mini-2025-04-16",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "incomplete",
            "content": [{"type": "output_text", "text": "Hel", "annotations": []}],
        },
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    ],
    "usage": {
        "input_tokens": 5,
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 6},
        "total_tokens": 14,
    },
}
ANTHROPIC = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Hi"},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 3},
}
OTEL = {
    "name": "chat gpt-4o",
    "endTimeUnixNano": "1727000000000000000",
    "attributes": [
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "7"}},
        {
            "key": "gen_ai.output.messages",
            "value": {
                "stringValue": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": "Hi"}],
                            "finish_reason": "stop",
                        }
                    ]
                )
            },
        },
        {"key": "gen_ai.completion.0.content", "value": {"stringValue": "Hi"}},
    ],
    "events": [
        {
            "name": "gen_ai.choice",
            "attributes": [{"key": "finish_reason", "value": {"stringValue": "stop"}}],
        }
    ],
}
OTEL_EXPORT = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "x"}}]},
            "scopeSpans": [{"scope": {"name": "s"}, "spans": [OTEL]}],
        }
    ]
}
LITELLM = {
    "id": "1",
    "call_type": "completion",
    "status": "success",
    "model": "gpt-4o",
    "model_group": "default",
    "model_map_information": {"model_map_key": "gpt-4o"},
    "response_cost": 0.1,
    "prompt_tokens": 5,
    "completion_tokens": 1,
    "startTime": 1_727_000_000.0,
    "endTime": 1_727_000_001.0,
    "hidden_params": {},
    "response": CHAT,
}
LANGFUSE = {
    "id": "obs-1",
    "type": "GENERATION",
    "startTime": "2025-01-15T10:42:17.123Z",
    "endTime": "2025-01-15T10:42:18.456Z",
    "model": "gpt-4o",
    "output": {"role": "assistant", "content": "Hi", "tool_calls": [{"function": {"name": "f"}}]},
    "usageDetails": {"input": 5, "output": 1, "total": 6},
    "level": "DEFAULT",
}


def wrapped(response: dict[str, Any], model: str = "requested-model") -> dict[str, Any]:
    return {
        "timestamp": "2024-09-22T10:15:30Z",
        "route": "/r",
        "request": {"model": model},
        "response": response,
    }


SAMPLES: dict[str, tuple[dict[str, Any], str]] = {
    "chat_bare": (CHAT, "openai_chat"),
    "chat_wrapped": (wrapped(CHAT), "openai_chat"),
    "responses_bare": (RESPONSES, "openai_responses"),
    "responses_wrapped": (wrapped(RESPONSES), "openai_responses"),
    "anthropic_bare": (ANTHROPIC, "anthropic"),
    "anthropic_wrapped": (wrapped(ANTHROPIC), "anthropic"),
    "otel_span": (OTEL, "otel_genai"),
    "otel_export": (OTEL_EXPORT, "otel_genai"),
    "litellm": (LITELLM, "litellm"),
    "langfuse": (LANGFUSE, "langfuse"),
}


# --- arbitrary JSON, weighted towards the keys and values the adapters look at ----------

INTERESTING_KEYS = sorted(
    {
        "object",
        "choices",
        "message",
        "delta",
        "content",
        "refusal",
        "finish_reason",
        "index",
        "tool_calls",
        "function",
        "function_call",
        "name",
        "arguments",
        "input",
        "usage",
        "prompt_tokens",
        "completion_tokens",
        "completion_tokens_details",
        "reasoning_tokens",
        "model",
        "system_fingerprint",
        "output",
        "type",
        "text",
        "status",
        "incomplete_details",
        "reason",
        "output_tokens",
        "input_tokens",
        "output_tokens_details",
        "stop_reason",
        "cache_read_input_tokens",
        "request",
        "response",
        "body",
        "timestamp",
        "created",
        "created_at",
        "attributes",
        "events",
        "key",
        "value",
        "stringValue",
        "intValue",
        "kvlistValue",
        "arrayValue",
        "values",
        "resourceSpans",
        "scopeSpans",
        "spans",
        "resourceLogs",
        "scopeLogs",
        "logRecords",
        "resource",
        "eventName",
        "event.name",
        "gen_ai.output.messages",
        "gen_ai.completion.0.content",
        "gen_ai.completion.0.role",
        "gen_ai.completion.0.tool_calls.0.name",
        "gen_ai.completion.1.content",
        "gen_ai.response.finish_reasons",
        "gen_ai.request.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.choice",
        "parts",
        "call_type",
        "model_group",
        "hidden_params",
        "response_cost",
        "model_map_information",
        "startTime",
        "endTime",
        "GENERATION",
        "usageDetails",
        "level",
        "metadata",
        "endTimeUnixNano",
        "timeUnixNano",
    }
)
INTERESTING_STRINGS = [
    "chat.completion",
    "chat.completion.chunk",
    "text_completion",
    "response",
    "message",
    "output_text",
    "refusal",
    "function_call",
    "custom_tool_call",
    "mcp_call",
    "reasoning",
    "tool_use",
    "text",
    "thinking",
    "GENERATION",
    "ERROR",
    "failure",
    "gen_ai.choice",
    "incomplete",
    "failed",
    "completed",
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "max_tokens",
    "thinking",
    "tool_call",
    "custom",
    "[1, 2",
    '{"a": 1}',
    "[]",
    "{}",
    "12",
    "²",
    "9" * 400,
    "2024-09-22T10:15:30",
    "0001-01-01T00:00:00+14:00",
    "\ud800",
    "\x00\x1b",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(INTERESTING_STRINGS)
)
json_keys = st.sampled_from(INTERESTING_KEYS) | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=6)
    ),
    max_leaves=30,
)
