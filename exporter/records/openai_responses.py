"""OpenAI Responses API (`object: "response"`).

The answer is spread over `output[]` items: `message` items hold
`output_text` and `refusal` parts; `function_call`, `custom_tool_call` and
`mcp_call` items are tool calls the model chose; `reasoning` items are hidden
thinking (not part of the visible output). There is no finish reason; it is
derived from `status` and `incomplete_details.reason`, and `raw_finish_reason`
says which of the two it came from.
"""

from __future__ import annotations

from typing import Any

from exporter.records.envelope import Envelope
from exporter.records.errors import RejectedRecord
from exporter.records.fields import as_dict, as_int, as_list, as_str, first_int
from exporter.records.record import Record, ToolCall, normalize_finish_reason

NAME = "openai_responses"
_TOOL_CALL_ITEMS = ("function_call", "custom_tool_call", "mcp_call")


def looks_like(response: dict[str, Any]) -> bool:
    if response.get("object") == "response":
        return True
    output = response.get("output")
    return (
        isinstance(output, list)
        and bool(output)
        and all(isinstance(item, dict) and "type" in item for item in output)
    )


def _finish(response: dict[str, Any], has_tool_calls: bool, refused: bool) -> str:
    status = as_str(response.get("status"))
    reason = as_str(as_dict(response.get("incomplete_details")).get("reason"))
    if status == "incomplete" and reason:
        return reason
    if status in ("failed", "cancelled", "incomplete"):
        return status
    if refused:
        return "refusal"
    if has_tool_calls:
        return "tool_call"
    return status or "completed"


def _read_message(item: dict[str, Any], texts: list[str], refusals: list[str]) -> None:
    """Collect the `output_text` and `refusal` parts of a `message` item."""
    for part in as_list(item.get("content")):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "output_text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            refusals.append(part["refusal"])


def normalize(envelope: Envelope) -> list[Record]:
    response = envelope.response
    if not isinstance(response.get("output"), list):
        raise RejectedRecord("missing_output", "response has no output array")
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[ToolCall] = []
    for item in response["output"]:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            _read_message(item, texts, refusals)
        elif kind in _TOOL_CALL_ITEMS:
            arguments = item.get("arguments", item.get("input"))
            calls.append(
                ToolCall(
                    name=as_str(item.get("name")) or "",
                    arguments=arguments if isinstance(arguments, str) else None,
                )
            )
    raw_finish = _finish(response, bool(calls), bool(refusals))
    finish = normalize_finish_reason(raw_finish)
    usage = as_dict(response.get("usage"))
    details = as_dict(usage.get("output_tokens_details"))
    return [
        Record(
            shape=NAME,
            output_text="".join(texts),
            finish_reason=finish,
            raw_finish_reason=raw_finish,
            structured_refusal=bool(refusals) or finish == "content_filter",
            refusal_text="".join(refusals) or None,
            requested_model=envelope.requested_model,
            served_model=as_str(response.get("model")),
            input_tokens=first_int(usage, "input_tokens", "prompt_tokens"),
            output_tokens=first_int(usage, "output_tokens", "completion_tokens"),
            reasoning_tokens=as_int(details.get("reasoning_tokens")),
            tool_calls=tuple(calls),
            timestamp=envelope.timestamp,
            source=envelope.source,
        )
    ]
