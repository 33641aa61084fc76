"""OpenAI Chat Completions (also Azure OpenAI and the many OpenAI-compatible servers).

Oddities handled: Azure returns a choice with `finish_reason: content_filter`
and no `message` at all; refusals arrive as `message.refusal` beside
`content: null` with `finish_reason: stop`, so they are reported as finish
reason `refusal` (as the Responses and Anthropic adapters do) while
`raw_finish_reason` keeps the provider's word; tool-call-only answers have no
text; `n > 1` gives several choices (the record describes the first by index,
`choice_count` says how many there were); legacy `function_call` instead of
`tool_calls`, and `custom` tool calls; the legacy Completions shape
(`choices[].text`) that OpenAI-compatible servers still serve.
"""

from __future__ import annotations

from typing import Any

from exporter.records.envelope import Envelope
from exporter.records.errors import RejectedRecord
from exporter.records.fields import as_dict, as_int, as_list, as_str, first_int, text_of
from exporter.records.record import Record, ToolCall, normalize_finish_reason

NAME = "openai_chat"


def looks_like(response: dict[str, Any]) -> bool:
    if response.get("object") in ("chat.completion", "chat.completion.chunk", "text_completion"):
        return True
    choices = response.get("choices")
    return (
        isinstance(choices, list)
        and bool(choices)
        and isinstance(choices[0], dict)
        and any(key in choices[0] for key in ("message", "finish_reason", "delta"))
    )


def _call(name: Any, arguments: Any) -> ToolCall:
    return ToolCall(
        name=as_str(name) or "", arguments=arguments if isinstance(arguments, str) else None
    )


def _tool_calls(message: dict[str, Any]) -> tuple[ToolCall, ...]:
    if message.get("tool_calls") is None and message.get("function_call") is None:
        return ()  # most answers are plain text
    calls = []
    for call in as_list(message.get("tool_calls")):
        if not isinstance(call, dict):
            continue
        if call.get("type") == "custom":
            custom = as_dict(call.get("custom"))
            calls.append(_call(custom.get("name"), custom.get("input")))
        else:
            function = as_dict(call.get("function"))
            calls.append(_call(function.get("name"), function.get("arguments")))
    legacy = as_dict(message.get("function_call"))
    if legacy:
        calls.append(_call(legacy.get("name"), legacy.get("arguments")))
    return tuple(calls)


def _choice_index(choice: dict[str, Any]) -> int:
    index = as_int(choice.get("index"))
    return index if index is not None else 0


def normalize(envelope: Envelope) -> list[Record]:
    response = envelope.response
    choices = [c for c in as_list(response.get("choices")) if isinstance(c, dict)]
    if not choices:
        raise RejectedRecord("missing_output", "chat completion has no choices")
    # n > 1 is rare; min() with a key function is not free.
    choice = choices[0] if len(choices) == 1 else min(choices, key=_choice_index)
    message = as_dict(choice.get("message")) or as_dict(choice.get("delta"))
    text = text_of(message.get("content"))
    if not message and isinstance(choice.get("text"), str):
        text = choice["text"]
    refusal_text = as_str(message.get("refusal"))
    raw_finish = as_str(choice.get("finish_reason"))
    finish = normalize_finish_reason(raw_finish)
    if refusal_text is not None and finish in ("stop", "other"):
        finish = "refusal"
    usage = as_dict(response.get("usage"))
    details = as_dict(usage.get("completion_tokens_details"))
    return [
        Record(
            shape=NAME,
            output_text=text,
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
