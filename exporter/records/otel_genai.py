"""OpenTelemetry GenAI semantic conventions, in the forms found in the wild.

- current: `gen_ai.output.messages` (a JSON string or an array of messages
  with typed `parts`);
- legacy `gen_ai.choice` events, on a span's `events[]` or as a log record
  whose body is `{index, finish_reason, message}`;
- OpenLLMetry-style indexed attributes `gen_ai.completion.{i}.content|role|
  finish_reason|tool_calls.{j}.name|arguments`;
- attributes as a plain mapping or as an OTLP-JSON list of `{key, value}`
  where int64 values arrive as strings; a whole OTLP export
  (`resourceSpans[].scopeSpans[].spans[]`) yields one record per GenAI span.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from exporter.records.envelope import Envelope
from exporter.records.errors import RejectedRecord
from exporter.records.fields import as_dict, as_int, as_list, as_str, as_timestamp, text_of
from exporter.records.record import Record, ToolCall, normalize_finish_reason

NAME = "otel_genai"
_PREFIX = "gen_ai."


def _any_value(value: Any) -> Any:
    """Decode an OTLP-JSON AnyValue (`{"stringValue": ...}` and friends)."""
    if not isinstance(value, dict):
        return value
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return as_int(value["intValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in as_list(as_dict(value["arrayValue"]).get("values"))]
    if "kvlistValue" in value:
        return flatten_attributes(as_dict(value["kvlistValue"]).get("values"))
    return None


def flatten_attributes(attributes: Any) -> dict[str, Any]:
    """Attributes as a plain dict, whether given as a mapping or an OTLP key/value list."""
    if isinstance(attributes, dict):
        return attributes
    flat: dict[str, Any] = {}
    for item in as_list(attributes):
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            flat[item["key"]] = _any_value(item.get("value"))
    return flat


def _has_genai(attributes: dict[str, Any]) -> bool:
    return any(isinstance(key, str) and key.startswith(_PREFIX) for key in attributes)


def _spans(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "resourceSpans" in obj:
        for resource in as_list(obj.get("resourceSpans")):
            for scope in as_list(as_dict(resource).get("scopeSpans")):
                for span in as_list(as_dict(scope).get("spans")):
                    if isinstance(span, dict):
                        yield span
    else:
        yield obj


def looks_like(obj: dict[str, Any]) -> bool:
    if "resourceSpans" in obj:
        return True
    if _has_genai(obj):
        return True
    if _has_genai(flatten_attributes(obj.get("attributes"))):
        return True
    event_name = obj.get("eventName") or flatten_attributes(obj.get("attributes")).get(
        "event.name"
    )
    return event_name == "gen_ai.choice"


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


class _Output:
    """Accumulates text, tool calls and finish reasons from whichever form is present."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.calls: list[ToolCall] = []
        self.finish: str | None = None
        self.refusal: str | None = None
        self.found = False

    def add_message(self, message: dict[str, Any], finish: Any = None) -> None:
        self.found = True
        parts = message.get("parts")
        if isinstance(parts, list):
            for part in parts:
                part = as_dict(part)
                if part.get("type") == "text" and isinstance(part.get("content"), str):
                    self.texts.append(part["content"])
                elif part.get("type") == "tool_call":
                    self._call(part.get("name"), part.get("arguments"))
        else:
            self.texts.append(text_of(message.get("content")))
            for call in as_list(message.get("tool_calls")):
                function = as_dict(as_dict(call).get("function")) or as_dict(call)
                self._call(function.get("name"), function.get("arguments"))
        if isinstance(message.get("refusal"), str):
            self.refusal = message["refusal"]
        self.finish = self.finish or as_str(finish) or as_str(message.get("finish_reason"))

    def _call(self, name: Any, arguments: Any) -> None:
        if arguments is not None and not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode()
        self.calls.append(ToolCall(name=as_str(name) or "", arguments=arguments))


def _collect_output(attrs: dict[str, Any], span: dict[str, Any]) -> _Output:
    out = _Output()
    messages = _maybe_json(attrs.get("gen_ai.output.messages"))
    if isinstance(messages, list) and messages:
        out.add_message(as_dict(messages[0]))
        return out
    if "gen_ai.completion.0.content" in attrs or "gen_ai.completion.0.finish_reason" in attrs:
        message: dict[str, Any] = {"content": attrs.get("gen_ai.completion.0.content")}
        calls = []
        j = 0
        while f"gen_ai.completion.0.tool_calls.{j}.name" in attrs:
            calls.append(
                {
                    "name": attrs.get(f"gen_ai.completion.0.tool_calls.{j}.name"),
                    "arguments": attrs.get(f"gen_ai.completion.0.tool_calls.{j}.arguments"),
                }
            )
            j += 1
        message["tool_calls"] = calls
        if isinstance(attrs.get("gen_ai.completion.0.refusal"), str):
            message["refusal"] = attrs["gen_ai.completion.0.refusal"]
        out.add_message(message, attrs.get("gen_ai.completion.0.finish_reason"))
        return out
    for event in as_list(span.get("events")):
        event = as_dict(event)
        event_attrs = flatten_attributes(event.get("attributes"))
        if event.get("name") == "gen_ai.choice":
            body = _maybe_json(event.get("body", event_attrs.get("body", event_attrs)))
            body = as_dict(body)
            out.add_message(as_dict(body.get("message")), body.get("finish_reason"))
            return out
        if event.get("name") == "gen_ai.content.completion":
            completion = _maybe_json(event_attrs.get("gen_ai.completion"))
            if isinstance(completion, list) and completion:
                out.add_message(as_dict(completion[0]))
                return out
    if span.get("eventName") == "gen_ai.choice" or attrs.get("event.name") == "gen_ai.choice":
        body = as_dict(_maybe_json(span.get("body")))
        if "stringValue" in body or "kvlistValue" in body:
            body = as_dict(_maybe_json(_any_value(body)))
        out.add_message(as_dict(body.get("message")), body.get("finish_reason"))
    return out


def _span_record(span: dict[str, Any], envelope: Envelope) -> Record | None:
    attrs = flatten_attributes(span.get("attributes")) if "attributes" in span else span
    out = _collect_output(attrs, span)
    if not out.found:
        return None
    finishes = _maybe_json(attrs.get("gen_ai.response.finish_reasons"))
    raw_finish = out.finish
    if raw_finish is None and isinstance(finishes, list) and finishes:
        raw_finish = as_str(finishes[0])
    finish = normalize_finish_reason(raw_finish)
    timestamp = as_timestamp(span.get("endTimeUnixNano") or span.get("timeUnixNano"))
    return Record(
        shape=NAME,
        output_text="".join(out.texts),
        finish_reason=finish,
        raw_finish_reason=raw_finish,
        structured_refusal=out.refusal is not None or finish in ("content_filter", "refusal"),
        refusal_text=out.refusal,
        requested_model=as_str(attrs.get("gen_ai.request.model")),
        served_model=as_str(attrs.get("gen_ai.response.model")),
        system_fingerprint=as_str(attrs.get("gen_ai.openai.response.system_fingerprint")),
        input_tokens=_first_count(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        output_tokens=_first_count(
            attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"
        ),
        reasoning_tokens=as_int(attrs.get("gen_ai.usage.reasoning_tokens")),
        tool_calls=tuple(out.calls),
        timestamp=timestamp or envelope.timestamp,
        source=envelope.source,
    )


def _first_count(attrs: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = as_int(attrs.get(key))
        if value is not None:
            return value
    return None


def normalize(envelope: Envelope) -> list[Record]:
    """One record per span that carries output; spans without output (an
    embeddings call, an HTTP span in the same export) are skipped."""
    records = [r for span in _spans(envelope.source) if (r := _span_record(span, envelope))]
    if not records:
        raise RejectedRecord(
            "missing_output",
            "no GenAI output found (gen_ai.output.messages, gen_ai.completion.0.*, "
            "or a gen_ai.choice event)",
        )
    return records
