"""OpenAI Chat Completions (also Azure OpenAI and the many OpenAI-compatible servers).

Oddities handled: Azure returns a choice with `finish_reason: content_filter`
and no `message` at all; refusals arrive as `message.refusal` beside
`content: null`; tool-call-only answers have no text; `n > 1` gives several
choices (the record describes the first by index, `choice_count` says how
many there were); legacy `function_call` instead of `tool_calls`.
"""

from __future__ import annotations

from typing import Any

from exporter.records.envelope import Envelope
from exporter.records.errors import RejectedRecord
from exporter.records.fields import as_dict, as_int, as_list, as_str, first_int, text_of
from exporter.records.record import Record, ToolCall, normalize_finish_reason

NAME = "openai_chat"


def looks_like(response: dict[str, Any]) -> bool:
    if response.get("object") in ("chat.completion", "chat.completion.chunk"):
        return True
    choices = response.get("choices")
    return (
        isinstance(choices, list)
        and bool(choices)
        and isinstance(choices[0], dict)
        and ("message" in choices[0] or "finish_reason" in choices[0])
    )


def _tool_calls(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    calls = []
    for call in as_list(message.get("tool_calls")):
        function = as_dict(as_dict(call).get("function"))
        arguments = function.get("arguments")
        calls.append(
            ToolCall(
                name=as_str(function.get("name")) or "",
                arguments=arguments if isinstance(arguments, str) else None,
            )
        )
    legacy = as_dict(message.get("function_call"))
    if legacy:
        arguments = legacy.get("arguments")
        calls.append(
            ToolCall(
                name=as_str(legacy.get("name")) or "",
                arguments=arguments if isinstance(arguments, str) else None,
            )
        )
    return tuple(calls)


def normalize(envelope: Envelope) -> list[Record]:
    response = envelope.response
    choices = [c for c in as_list(response.get("choices")) if isinstance(c, dict)]
    if not choices:
        raise RejectedRecord("missing_output", "chat completion has no choices")
    choices.sort(key=lambda c: as_int(c.get("index")) or 0)
    choice = choices[0]
    message = as_dict(choice.get("message"))
    refusal_text = as_str(message.get("refusal"))
    raw_finish = as_str(choice.get("finish_reason"))
    finish = normalize_finish_reason(raw_finish)
    usage = as_dict(response.get("usage"))
    details = as_dict(usage.get("completion_tokens_details"))
    return [
        Record(
            shape=NAME,
            output_text=text_of(message.get("content")),
            finish_reason=finish,
            raw_finish_reason=raw_finish,
            structured_refusal=refusal_text is not None or finish == "content_filter",
            refusal_text=refusal_text,
            requested_model=envelope.requested_model,
            served_model=as_str(response.get("model")),
            system_fingerprint=as_str(response.get("system_fingerprint")),
            input_tokens=first_int(usage, "prompt_tokens", "input_tokens"),
            output_tokens=first_int(usage, "completion_tokens", "output_tokens"),
            reasoning_tokens=as_int(details.get("reasoning_tokens")),
            tool_calls=_tool_calls(message),
            choice_count=len(choices),
            timestamp=envelope.timestamp,
            source=envelope.source,
        )
    ]
