"""Anthropic Messages API (`type: "message"`), also as served by Bedrock and Vertex.

`content[]` mixes `text` blocks with `tool_use`, `thinking` and
`redacted_thinking` blocks; only text is visible output. `stop_reason`
includes `refusal` (a structured refusal) and `max_tokens` (truncation).
`usage.input_tokens` counts only the uncached part of the prompt; the cache
read and write counts are added back so that input size means the same as
OpenAI's `prompt_tokens` and does not drop the moment caching starts to hit.
"""

from __future__ import annotations

from typing import Any

from exporter.records.envelope import Envelope
from exporter.records.errors import RejectedRecord
from exporter.records.fields import as_dict, as_int, as_str, dump_json
from exporter.records.record import Record, ToolCall, normalize_finish_reason

NAME = "anthropic"
_TOOL_BLOCKS = ("tool_use", "server_tool_use", "mcp_tool_use")
_CACHE_KEYS = ("cache_creation_input_tokens", "cache_read_input_tokens")


def looks_like(response: dict[str, Any]) -> bool:
    if response.get("type") == "message" and isinstance(response.get("content"), list):
        return True
    return "stop_reason" in response and isinstance(response.get("content"), list)


def _input_tokens(usage: dict[str, Any]) -> int | None:
    uncached = as_int(usage.get("input_tokens"))
    if uncached is None:
        return None
    total = uncached
    for key in _CACHE_KEYS:  # absent unless prompt caching is in use
        cached = usage.get(key)
        if cached is not None and (count := as_int(cached)) is not None:
            total += count
    return total


def normalize(envelope: Envelope) -> list[Record]:
    response = envelope.response
    content = response.get("content")
    if not isinstance(content, list):
        raise RejectedRecord("missing_output", "message has no content array")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind in _TOOL_BLOCKS:
            calls.append(
                ToolCall(
                    name=as_str(block.get("name")) or "", arguments=dump_json(block.get("input"))
                )
            )
    raw_finish = as_str(response.get("stop_reason"))
    finish = normalize_finish_reason(raw_finish)
    usage = as_dict(response.get("usage"))
    return [
        Record(
            shape=NAME,
            output_text="".join(texts),
            finish_reason=finish,
            raw_finish_reason=raw_finish,
            structured_refusal=finish == "refusal",
            requested_model=envelope.requested_model,
            served_model=as_str(response.get("model")),
            input_tokens=_input_tokens(usage),
            output_tokens=as_int(usage.get("output_tokens")),
            tool_calls=tuple(calls),
            timestamp=envelope.timestamp,
            source=envelope.source,
        )
    ]
