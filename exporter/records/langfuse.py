"""Langfuse generation observations (exported JSON, `type: "GENERATION"`).

`output` is whatever the integration captured: the assistant message (with
`tool_calls`/`refusal`), a whole provider response, a list of messages, a
plain string, or structured JSON a generation returned (kept as JSON text so
format checks still see it). Usage lives in `usageDetails` (current), whose
usage types are additive (`input` plus `input_cached_tokens`, `output` plus
`output_reasoning_tokens`, ...), or `usage` (older exports). A generation that
failed (`level: "ERROR"`, no output) becomes an `error` record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from exporter.records.envelope import Envelope
from exporter.records.errors import RejectedRecord
from exporter.records.fields import (
    as_dict,
    as_int,
    as_list,
    as_str,
    as_timestamp,
    dump_json,
    first_int,
    load_json,
    sum_ints,
    text_of,
)
from exporter.records.record import Record, ToolCall, normalize_finish_reason

NAME = "langfuse"
_MESSAGE_KEYS = ("role", "content", "tool_calls", "function_call", "refusal")
_RESPONSES_ITEMS = ("message", "function_call", "custom_tool_call", "reasoning")


def looks_like(obj: dict[str, Any]) -> bool:
    return obj.get("type") == "GENERATION" and "output" in obj


def _usage(obs: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    """Input, output and reasoning tokens."""
    details = as_dict(obs.get("usageDetails"))
    if details:
        counts = {key: as_int(value) for key, value in details.items() if isinstance(key, str)}
        reasoning = [v for k, v in counts.items() if "reasoning" in k and v is not None]
        return (
            sum_ints(*(v for k, v in counts.items() if k.startswith("input"))),
            sum_ints(*(v for k, v in counts.items() if k.startswith("output"))),
            reasoning[0] if reasoning else None,
        )
    usage = as_dict(obs.get("usage"))
    return (
        first_int(usage, "input", "promptTokens", "prompt_tokens", "input_tokens"),
        first_int(usage, "output", "completionTokens", "completion_tokens", "output_tokens"),
        None,
    )


def _message_calls(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    calls = []
    for call in [*as_list(message.get("tool_calls")), message.get("function_call")]:
        if isinstance(call, dict):
            function = as_dict(call.get("function")) or call
            arguments = function.get("arguments")
            if not isinstance(arguments, str):
                arguments = dump_json(arguments)
            calls.append(ToolCall(name=as_str(function.get("name")) or "", arguments=arguments))
    return tuple(calls)


def _from_output(output: Any) -> Record:
    """A record (model and usage not yet filled in) from a captured message or value.

    From a list of messages the last assistant message is the answer (agent
    frameworks capture the turn's tool calls before it); a list of content
    parts is read as text.
    """
    if isinstance(output, list):
        messages = [m for m in output if isinstance(m, dict) and "role" in m]
        assistant = [m for m in messages if m.get("role") == "assistant"]
        if messages:
            output = (assistant or messages)[-1]
        elif text_of(output):
            return Record(shape=NAME, output_text=text_of(output))
    if isinstance(output, dict) and any(key in output for key in _MESSAGE_KEYS):
        refusal = as_str(output.get("refusal"))
        return Record(
            shape=NAME,
            output_text=text_of(output.get("content")),
            structured_refusal=refusal is not None,
            refusal_text=refusal,
            tool_calls=_message_calls(output),
        )
    text = output if isinstance(output, str) else dump_json(output) or ""
    return Record(shape=NAME, output_text=text)


def _finish(obs: dict[str, Any], record: Record) -> tuple[str, str | None]:
    metadata = as_dict(obs.get("metadata"))
    raw = as_str(metadata.get("finish_reason")) or as_str(metadata.get("stop_reason"))
    if raw is None:
        reasons = as_list(load_json(metadata.get("finish_reasons")))
        raw = as_str(reasons[0]) if reasons else None
    if raw is not None:
        finish = normalize_finish_reason(raw)
    elif obs.get("level") == "ERROR":
        finish = "error"
    else:
        finish = record.finish_reason
    if record.structured_refusal and finish in ("stop", "other"):
        finish = "refusal"
    return finish, raw


def _response_candidate(output: Any) -> dict[str, Any] | None:
    """The provider-response dict to try when `output` may be one.

    The Responses integration captures `output[]` items (or one `message`
    item) rather than the whole response; they are wrapped back into one so
    the Responses adapter reads text, refusals and function calls.
    """
    if isinstance(output, list) and any(
        isinstance(item, dict) and item.get("type") in _RESPONSES_ITEMS for item in output
    ):
        return {"output": output}
    if isinstance(output, dict):
        if output.get("type") == "message" and "stop_reason" not in output:
            return {"output": [output]}
        return output
    return None


def _record(
    output: Any,
    obs: dict[str, Any],
    timestamp: float | None,
    normalize_response: Callable[[Envelope], list[Record]],
) -> Record:
    candidate = _response_candidate(output)
    if candidate is not None:
        try:
            return normalize_response(
                Envelope(request={}, response=candidate, timestamp=timestamp, source=obs)
            )[0]
        except RejectedRecord as rejected:
            if rejected.reason != "unknown_format":
                raise
    return _from_output(output)


def normalize(
    envelope: Envelope, normalize_response: Callable[[Envelope], list[Record]]
) -> list[Record]:
    obs = envelope.source
    output = load_json(obs.get("output"))
    timestamp = as_timestamp(obs.get("endTime")) or as_timestamp(obs.get("startTime"))
    timestamp = timestamp or envelope.timestamp
    if output is None or output == "":
        if obs.get("level") != "ERROR":
            raise RejectedRecord("missing_output", "Langfuse generation has no output")
        record = Record(shape=NAME, output_text="", finish_reason="error")
    else:
        record = _record(output, obs, timestamp, normalize_response)
    finish, raw = _finish(obs, record)
    input_tokens, output_tokens, reasoning_tokens = _usage(obs)
    model = as_str(obs.get("model"))
    return [
        dataclasses.replace(
            record,
            shape=NAME,
            finish_reason=finish,
            raw_finish_reason=raw or record.raw_finish_reason,
            requested_model=model or record.requested_model,
            served_model=record.served_model or model,
            input_tokens=_prefer(input_tokens, record.input_tokens),
            output_tokens=_prefer(output_tokens, record.output_tokens),
            reasoning_tokens=_prefer(reasoning_tokens, record.reasoning_tokens),
            timestamp=timestamp,
            source=obs,
        )
    ]


def _prefer(first: int | None, second: int | None) -> int | None:
    return first if first is not None else second
