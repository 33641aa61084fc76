"""Anthropic Messages API (`type: "message"`).

`content[]` mixes `text` blocks with `tool_use`, `thinking` and
`redacted_thinking` blocks; only text is visible output. `stop_reason`
includes `refusal` (a structured refusal) and `max_tokens` (truncation).
"""

from __future__ import annotations

from typing import Any

import orjson

from exporter.records.envelope import Envelope
from exporter.records.errors import RejectedRecord
from exporter.records.fields import as_dict, as_list, as_str, first_int
from exporter.records.record import Record, ToolCall, normalize_finish_reason

NAME = "anthropic"


def looks_like(response: dict[str, Any]) -> bool:
    if response.get("type") == "message" and isinstance(response.get("content"), list):
        return True
    return "stop_reason" in response and isinstance(response.get("content"), list)


def normalize(envelope: Envelope) -> list[Record]:
    response = envelope.response
    content = response.get("content")
    if not isinstance(content, list):
        raise RejectedRecord("missing_output", "message has no content array")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        block = as_dict(block)
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") in ("tool_use", "server_tool_use"):
            arguments = block.get("input")
            calls.append(
                ToolCall(
                    name=as_str(block.get("name")) or "",
                    arguments=orjson.dumps(arguments).decode() if arguments is not None else None,
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
            input_tokens=first_int(usage, "input_tokens"),
            output_tokens=first_int(usage, "output_tokens"),
            tool_calls=tuple(calls),
            timestamp=envelope.timestamp,
            source=envelope.source,
        )
    ]
