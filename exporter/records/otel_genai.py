"""OpenTelemetry GenAI semantic conventions, in the forms found in the wild.

- current: `gen_ai.output.messages` (a JSON string or an array of messages
  with typed `parts`), one message per choice;
- legacy `gen_ai.choice` events, on a span's `events[]` or as a log record
  whose body is `{index, finish_reason, message}`; older still, a
  `gen_ai.content.completion` span event with a `gen_ai.completion` attribute;
- OpenLLMetry-style indexed attributes `gen_ai.completion.{i}.content|role|
  refusal|finish_reason|tool_calls.{j}.name|arguments`, where Anthropic
  thinking is written as a completion of its own with role `thinking` that is
  not the visible answer;
- attributes as a plain mapping or as an OTLP-JSON list of `{key, value}`
  where int64 values arrive as strings; a whole OTLP export
  (`resourceSpans[].scopeSpans[].spans[]`, `resourceLogs[].scopeLogs[].
  logRecords[]`) yields one record per span or log record with GenAI output,
  and each record's `source` is its own span (plus its `resource`) so stream
  labels are read per span rather than from the export as a whole. There, agent,
  tool and workflow spans (a `gen_ai.operation.name` that is not a model call)
  and util-genai's operation-details log records are skipped: each repeats the
  output of a call that its own span already counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
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
    text_of,
)
from exporter.records.otlp import any_value, flatten_attributes, is_any_value
from exporter.records.record import Record, ToolCall, normalize_finish_reason

NAME = "otel_genai"
# `gen_ai.operation.name` values of one model call with output text (an agent, tool or
# workflow span repeats some call's output; an embeddings call has none)
CHAT_OPERATIONS = frozenset(("chat", "text_completion", "generate_content", "completion"))
EMBEDDINGS_OPERATIONS = frozenset(("embeddings", "embedding"))
# util-genai's log record of a call its span already carries
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
_PREFIX = "gen_ai."
_COMPLETION = "gen_ai.completion."
_EXPORTS = (("resourceSpans", "scopeSpans", "spans"), ("resourceLogs", "scopeLogs", "logRecords"))
_EXPORT_KEYS = tuple(key for export in _EXPORTS for key in export[:2])
_SPAN_TIMES = ("endTimeUnixNano", "timeUnixNano", "observedTimeUnixNano")


@dataclass(slots=True)
class _Choice:
    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    finish: str | None = None
    refusal: str | None = None


def _has_genai(attributes: dict[str, Any]) -> bool:
    for key in attributes:  # noqa: SIM110 (a loop: any() over a generator costs more per record)
        if isinstance(key, str) and key.startswith(_PREFIX):
            return True
    return False


def _is_export(obj: dict[str, Any]) -> bool:
    """A whole OTLP export (or one ResourceSpans/ResourceLogs object), not a lone span."""
    return not obj.keys().isdisjoint(_EXPORT_KEYS)


def _spans(obj: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each span or log record with its resource; a lone span has no resource (None)."""
    if not _is_export(obj):
        return [(obj, None)]
    return list(_exported_spans(obj))


def _exported_spans(obj: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for resources_key, scopes_key, items_key in _EXPORTS:
        if resources_key in obj:
            resources = as_list(obj.get(resources_key))
        elif scopes_key in obj:
            resources = [obj]  # one ResourceSpans/ResourceLogs object per line
        else:
            continue
        for resource in resources:
            resource = as_dict(resource)
            for scope in as_list(resource.get(scopes_key)):
                for item in as_list(as_dict(scope).get(items_key)):
                    if isinstance(item, dict):
                        yield item, as_dict(resource.get("resource"))


def looks_like(obj: dict[str, Any]) -> bool:
    if _is_export(obj):
        return True
    attributes = flatten_attributes(obj.get("attributes"))
    if _has_genai(attributes) or _has_genai(obj):  # attributes first: where they usually are
        return True
    return (obj.get("eventName") or attributes.get("event.name")) == "gen_ai.choice"


def _call(name: Any, arguments: Any) -> ToolCall:
    if arguments is not None and not isinstance(arguments, str):
        arguments = dump_json(arguments)
    return ToolCall(name=as_str(name) or "", arguments=arguments)


def _parts_output(parts: list[Any]) -> tuple[str, list[ToolCall], str | None]:
    """Text, tool calls and refusal of a current semantic-conventions message (`parts[]`);
    OpenLLMetry writes OpenAI's `refusal` field as a part `{"type": "refusal", "content"}`."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    refusals: list[str] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" or kind == "refusal":
            content = part.get("content")
            if isinstance(content, str):
                (texts if kind == "text" else refusals).append(content)
        elif kind == "tool_call":
            calls.append(_call(part.get("name"), part.get("arguments")))
    return "".join(texts), calls, "".join(refusals) if refusals else None


def _message_output(message: dict[str, Any]) -> tuple[str, list[ToolCall]]:
    """Text and tool calls of an OpenAI-style message (`content`, `tool_calls`)."""
    calls: list[ToolCall] = []
    for call in [*as_list(message.get("tool_calls")), message.get("function_call")]:
        if isinstance(call, dict):
            function = as_dict(call.get("function")) or call
            calls.append(_call(function.get("name"), function.get("arguments")))
    return text_of(message.get("content")), calls


def _choice(message: Any, finish: Any = None) -> _Choice:
    if not isinstance(message, dict):
        message = as_dict(load_json(message))
    parts = message.get("parts")
    refusal = None
    if isinstance(parts, list):
        text, calls, refusal = _parts_output(parts)
    else:
        text, calls = _message_output(message)
    finish = as_str(finish) or as_str(message.get("finish_reason"))
    return _Choice(text, calls, finish, refusal or as_str(message.get("refusal")))


def _event_choice(event: dict[str, Any]) -> _Choice:
    """A `gen_ai.choice` span event or log record: the body, else the attributes."""
    attributes = flatten_attributes(event.get("attributes"))
    body = event.get("body", attributes.get("body", attributes))
    if is_any_value(body):
        body = any_value(body)
    body = as_dict(load_json(body))
    return _choice(body.get("message"), body.get("finish_reason"))


def _indexed(attrs: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """`gen_ai.completion.{i}.{field}` attributes grouped by choice index."""
    grouped: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not isinstance(key, str) or not key.startswith(_COMPLETION):
            continue
        index, _, name = key[len(_COMPLETION) :].partition(".")
        number = as_int(index)
        if number is not None and name:
            grouped.setdefault(number, {})[name] = value
    return grouped


def _indexed_choices(attrs: dict[str, Any]) -> list[_Choice]:
    choices: list[_Choice] = []
    thinking_finish = None
    for _, fields in sorted(_indexed(attrs).items()):
        if fields.get("role") == "thinking":
            thinking_finish = thinking_finish or fields.get("finish_reason")
            continue
        message: dict[str, Any] = {
            "content": fields.get("content"),
            "refusal": fields.get("refusal"),
        }
        tool_calls = []
        j = 0
        while f"tool_calls.{j}.name" in fields or f"tool_calls.{j}.arguments" in fields:
            tool_calls.append(
                {
                    "name": fields.get(f"tool_calls.{j}.name"),
                    "arguments": fields.get(f"tool_calls.{j}.arguments"),
                }
            )
            j += 1
        if "function_call.name" in fields:
            tool_calls.append(
                {
                    "name": fields.get("function_call.name"),
                    "arguments": fields.get("function_call.arguments"),
                }
            )
        message["tool_calls"] = tool_calls
        choices.append(_choice(message, fields.get("finish_reason") or thinking_finish))
    return choices


def _choices(attrs: dict[str, Any], span: dict[str, Any]) -> list[_Choice]:
    messages = load_json(attrs.get("gen_ai.output.messages"))
    if isinstance(messages, list) and messages:
        return [_choice(message) for message in messages]
    indexed = _indexed_choices(attrs)
    if indexed:
        return indexed
    events = [event for event in as_list(span.get("events")) if isinstance(event, dict)]
    choices = [_event_choice(event) for event in events if event.get("name") == "gen_ai.choice"]
    if choices:
        return choices
    for event in events:
        if event.get("name") == "gen_ai.content.completion":
            completion = load_json(
                flatten_attributes(event.get("attributes")).get("gen_ai.completion")
            )
            if isinstance(completion, str):
                return [_Choice(text=completion)]
            if isinstance(completion, list) and completion:
                return [_choice(message) for message in completion]
    if span.get("eventName") == "gen_ai.choice" or attrs.get("event.name") == "gen_ai.choice":
        return [_event_choice(span)]
    return []


def _finish_reasons(attrs: dict[str, Any]) -> str | None:
    """The first of `gen_ai.response.finish_reasons`, else the anthropic SDK's own spans' only
    record of it, `anthropic.message.stop_reason`."""
    reasons = attrs.get("gen_ai.response.finish_reasons")
    if reasons is None:
        return as_str(attrs.get("anthropic.message.stop_reason"))
    reasons = load_json(reasons)
    if isinstance(reasons, list) and reasons:
        return as_str(reasons[0])
    return as_str(reasons)


def _exported_call(attrs: dict[str, Any], span: dict[str, Any]) -> bool:
    """Whether a span or log record of a whole export stands for a call of its own: not an
    agent, tool or workflow span (their output is some call's output), nor util-genai's
    operation-details log record (a copy of its span, in the same or another export)."""
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation and operation not in CHAT_OPERATIONS:
        return False
    return (span.get("eventName") or attrs.get("event.name")) != DETAILS_EVENT


def _span_timestamp(span: dict[str, Any]) -> float | None:
    if span.keys().isdisjoint(_SPAN_TIMES):  # a span in a flat log line has no times
        return None
    for key in _SPAN_TIMES:
        raw = span.get(key)
        if raw is not None and (timestamp := as_timestamp(raw)):
            return timestamp
    return None


def _span_record(
    span: dict[str, Any], resource: dict[str, Any] | None, envelope: Envelope
) -> Record | None:
    attrs = {**span, **flatten_attributes(span.get("attributes"))}
    if resource is not None and not _exported_call(attrs, span):
        return None
    choices = _choices(attrs, span)
    if not choices:
        return None
    choice = choices[0]
    raw_finish = choice.finish or _finish_reasons(attrs)
    finish = normalize_finish_reason(raw_finish)
    if choice.refusal is not None and finish in ("stop", "other"):
        finish = "refusal"
    return Record(
        shape=NAME,
        output_text=choice.text,
        finish_reason=finish,
        raw_finish_reason=raw_finish,
        structured_refusal=choice.refusal is not None or finish in ("content_filter", "refusal"),
        refusal_text=choice.refusal,
        requested_model=as_str(attrs.get("gen_ai.request.model")),
        served_model=as_str(attrs.get("gen_ai.response.model")),
        system_fingerprint=as_str(attrs.get("gen_ai.openai.response.system_fingerprint"))
        or as_str(attrs.get("openai.response.system_fingerprint")),
        input_tokens=first_int(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        output_tokens=first_int(
            attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"
        ),
        reasoning_tokens=first_int(
            attrs,
            "gen_ai.usage.reasoning.output_tokens",
            "gen_ai.usage.output_tokens.reasoning",
            "gen_ai.usage.reasoning_tokens",
        ),
        tool_calls=tuple(choice.calls),
        choice_count=len(choices),
        timestamp=_span_timestamp(span) or envelope.timestamp,
        source=envelope.source if resource is None else {**span, "resource": resource},
    )


def normalize(envelope: Envelope) -> list[Record]:
    """One record per span that carries output; spans without output (an
    embeddings call, an HTTP span in the same export) are skipped."""
    records = []
    for span, resource in _spans(envelope.source):
        record = _span_record(span, resource, envelope)
        if record is not None:
            records.append(record)
    if not records:
        raise RejectedRecord(
            "missing_output",
            "no GenAI output found (gen_ai.output.messages, gen_ai.completion.0.*, "
            "or a gen_ai.choice event)",
        )
    return records
