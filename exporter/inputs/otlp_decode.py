"""OTLP/HTTP export bodies (traces, logs) decoded into what the otel_genai adapter reads.

The network-free layer under the native OTLP receiver (issue 15):

- both encodings go through the official `opentelemetry-proto` messages: protobuf with
  `FromString`, OTLP/JSON with `json_format.ParseDict` after turning its hex trace/span ids
  (the OTLP/JSON rule; protobuf's own JSON mapping, which ParseDict follows, is base64) into
  base64, so one walk serves both;
- each span is classified (chat call, embeddings, other GenAI operation, not GenAI) and only
  chat spans and the log records that carry a span's text become dicts. A span whose serialized
  bytes hold no GenAI marker is "not GenAI" without a look at its attributes: a storm of
  application spans costs a serialization and a substring search each, never a dict;
- a dict has the OTLP-JSON shape otel_genai reads (camelCase keys, hex ids), attributes as a
  plain mapping with values taken from AnyValue's oneof (several times faster than
  `json_format.MessageToDict`, and ints stay ints), plus `scope` and `resource` so stream-label
  paths such as `resource.attributes.service.name` resolve per span;
- OpenInference spans get the GenAI attribute names (see `exporter.records.openinference`).

`exporter.inputs.otlp_join.SpanJoin` then pairs chat spans without text with the log records
that carry it (the legacy openai-v2 `gen_ai.choice` events) and drops a second span of one
response id.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import orjson
from google.protobuf.json_format import ParseDict, ParseError
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporter.records import openinference
from exporter.records.otel_genai import CHAT_OPERATIONS, DETAILS_EVENT, EMBEDDINGS_OPERATIONS

Signal = Literal["traces", "logs"]
Export = ExportTraceServiceRequest | ExportLogsServiceRequest
PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
JSON_TYPE = "application/json"
_MESSAGES: dict[str, type[Export]] = {
    "traces": ExportTraceServiceRequest,
    "logs": ExportLogsServiceRequest,
}
CHOICE_EVENT = "gen_ai.choice"
# Bytes every span or log record of interest holds (in an attribute key or its event name).
_MARKERS = {
    "traces": (b"gen_ai.", openinference.KIND.encode(), b"llm.request.type"),
    "logs": (CHOICE_EVENT.encode(), DETAILS_EVENT.encode()),
}
_SCALARS = frozenset(("string_value", "int_value", "double_value", "bool_value"))
OUTPUT = "gen_ai.output.messages"
FINISH = "gen_ai.response.finish_reasons"
# OTLP/JSON containers (camelCase or proto names) down to the items that carry ids
_JSON_PATHS = {
    "traces": (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans",)),
    "logs": (
        ("resourceLogs", "resource_logs"),
        ("scopeLogs", "scope_logs"),
        ("logRecords", "log_records"),
    ),
}
_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class OtlpDecodeError(ValueError):
    """A body that is not an OTLP export of the signal; `status` is the HTTP answer it calls
    for: 415 for a content type OTLP/HTTP does not define, else 400."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Kind(StrEnum):
    CHAT = "chat"  # a chat/completion call: one record
    EMBEDDINGS = "embeddings"  # counted, never recorded (no output text)
    GENAI_OTHER = "genai_other"  # agent, tool, chain spans: their output is some call's output
    OTHER = "other"  # not GenAI (spans and log records)
    CHOICE = "choice"  # a `gen_ai.choice` log record: a span's text (legacy openai-v2)
    DETAILS = "details"  # util-genai's operation-details log record: a copy of its span


@dataclass(slots=True)
class Item:
    """A span or log record as a dict; `key` (trace id + span id bytes) ties a span to its log
    records; `needs_join`: a chat span without output, which may come in log records."""

    kind: Kind
    value: dict[str, Any]
    key: bytes
    response_id: str | None = None
    needs_join: bool = False


@dataclass(slots=True)
class Decoded:
    """The chat spans and join partners of an export (every item with `keep_all`), and how many
    spans or log records of each kind it held."""

    items: list[Item] = field(default_factory=list)
    counts: dict[Kind, int] = field(default_factory=lambda: dict.fromkeys(Kind, 0))


def parse(body: bytes, content_type: str, signal: Signal) -> Export:
    """The export message of `body`; OtlpDecodeError when it is not one."""
    message_type = _MESSAGES.get(signal)
    if message_type is None:
        raise ValueError(f"unknown OTLP signal {signal!r}; expected traces or logs")
    media = content_type.partition(";")[0].strip().lower()
    if media in PROTOBUF_TYPES:
        try:
            return message_type.FromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise OtlpDecodeError(
                f"body is not a protobuf {message_type.__name__} ({len(body)} bytes): {exc}"
            ) from exc
    if media != JSON_TYPE:
        raise OtlpDecodeError(
            f"unsupported content type {content_type[:100]!r}: OTLP/HTTP bodies are "
            f"{PROTOBUF_TYPES[0]} or {JSON_TYPE}",
            status=415,
        )
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpDecodeError(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise OtlpDecodeError(f"an OTLP/JSON body is an object, not {type(data).__name__}")
    _ids_to_base64(data, signal)
    message = message_type()
    try:
        ParseDict(data, message, ignore_unknown_fields=True)
    except (ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise OtlpDecodeError(f"body is not an OTLP/JSON {message_type.__name__}: {exc}") from exc
    return message


def _children(obj: Any, names: tuple[str, ...]) -> list[Any]:
    if isinstance(obj, dict):
        for name in names:
            if isinstance(found := obj.get(name), list):
                return found
    return []


def _ids_to_base64(data: dict[str, Any], signal: Signal) -> None:
    """OTLP/JSON writes trace and span ids as hex, where protobuf JSON has base64."""
    resources, scopes, items = _JSON_PATHS[signal]
    for resource in _children(data, resources):
        for scope in _children(resource, scopes):
            for item in _children(scope, items):
                for obj in (item, *_children(item, ("links",))):
                    if not isinstance(obj, dict):
                        continue
                    for key in _ID_KEYS:
                        if isinstance(value := obj.get(key), str):
                            try:
                                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
                            except ValueError:
                                raise OtlpDecodeError(
                                    f"{key} {value[:64]!r} is not hex (OTLP/JSON ids are hex)"
                                ) from None


def value_of(value: Any) -> Any:
    """An AnyValue as a plain value (bytes as base64 text, as OTLP/JSON writes them)."""
    which = value.WhichOneof("value")
    if which in _SCALARS:
        return getattr(value, which)
    if which == "array_value":
        return [value_of(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def attributes(pairs: Iterable[Any]) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs}


def classify_span(span: Any) -> Kind:
    """From attribute keys; values are read only for the keys that name an operation."""
    operation = request_type = inference = None
    genai = False
    for pair in span.attributes:
        key = pair.key
        if key.startswith("gen_ai."):
            genai = True
            if key == "gen_ai.operation.name":
                operation = pair.value.string_value
        elif key == openinference.KIND:
            inference = pair.value.string_value
        elif key == "llm.request.type":  # OpenLLMetry before gen_ai.operation.name
            request_type = pair.value.string_value
    if inference is not None:
        if inference == "LLM":
            return Kind.CHAT
        return Kind.EMBEDDINGS if inference == "EMBEDDING" else Kind.GENAI_OTHER
    operation = operation or request_type
    if operation in EMBEDDINGS_OPERATIONS:
        return Kind.EMBEDDINGS
    if operation in CHAT_OPERATIONS or (genai and not operation):
        return Kind.CHAT
    return Kind.GENAI_OTHER if operation else Kind.OTHER


def _log_kind(record: Any) -> Kind:
    name = record.event_name
    if not name:  # SDKs before LogRecord.event_name put it in an attribute
        name = next((p.value.string_value for p in record.attributes if p.key == "event.name"), "")
    if name == CHOICE_EVENT:
        return Kind.CHOICE
    return Kind.DETAILS if name == DETAILS_EVENT else Kind.OTHER


def has_output(value: dict[str, Any]) -> bool:
    """Whether a span dict carries its output in a form otel_genai reads."""
    attrs = value["attributes"]
    if OUTPUT in attrs:
        return True
    for event in value["events"]:
        if event["name"] in (CHOICE_EVENT, "gen_ai.content.completion"):
            return True
    return any(key.startswith("gen_ai.completion.") for key in attrs)


def mark_without_text(value: dict[str, Any]) -> None:
    """Give a span whose text never came an empty `gen_ai.choice` event, so otel_genai makes a
    record of its model, usage and finish reason instead of rejecting it for missing output."""
    value["events"].append({"timeUnixNano": 0, "name": CHOICE_EVENT, "attributes": {}})


def _span_item(span: Any, kind: Kind, scope: dict[str, Any], resource: dict[str, Any]) -> Item:
    attrs = attributes(span.attributes)
    inference = openinference.is_openinference(attrs)
    if inference:
        openinference.map_to_genai(attrs)
    events = [
        {"timeUnixNano": e.time_unix_nano, "name": e.name, "attributes": attributes(e.attributes)}
        for e in span.events
    ]
    value = {
        "traceId": span.trace_id.hex(),
        "spanId": span.span_id.hex(),
        "parentSpanId": span.parent_span_id.hex(),
        "name": span.name,
        "kind": span.kind,
        "startTimeUnixNano": span.start_time_unix_nano,
        "endTimeUnixNano": span.end_time_unix_nano,
        "attributes": attrs,
        "events": events,
        "status": {"code": span.status.code, "message": span.status.message},
        "scope": scope,
        "resource": resource,
    }
    response_id = attrs.get("gen_ai.response.id")
    if isinstance(response_id, str) and response_id:  # one app's, not another's that uses
        service = resource.get("attributes", {}).get("service.name")  # the same ids
        response_id = f"{service}\0{response_id}"
    else:
        response_id = None
    item = Item(kind, value, span.trace_id + span.span_id, response_id)
    if kind is Kind.CHAT and not has_output(value):
        if inference:  # nothing else ever brings an OpenInference span's text
            mark_without_text(value)
        else:
            item.needs_join = True
    return item


def _log_item(record: Any, kind: Kind, scope: dict[str, Any], resource: dict[str, Any]) -> Item:
    value = {
        "traceId": record.trace_id.hex(),
        "spanId": record.span_id.hex(),
        "timeUnixNano": record.time_unix_nano,
        "observedTimeUnixNano": record.observed_time_unix_nano,
        "eventName": record.event_name,
        "body": value_of(record.body) if record.HasField("body") else None,
        "attributes": attributes(record.attributes),
        "scope": scope,
        "resource": resource,
    }
    return Item(kind, value, record.trace_id + record.span_id)


def walk(message: Export, keep_all: bool = False) -> Decoded:
    """The items of a decoded export (see the module docstring); `keep_all` also converts the
    spans and log records a receiver skips, for inspection and tests."""
    traces = isinstance(message, ExportTraceServiceRequest)
    markers = _MARKERS["traces" if traces else "logs"]
    classify, build = (classify_span, _span_item) if traces else (_log_kind, _log_item)
    wanted = (Kind.CHAT,) if traces else (Kind.CHOICE, Kind.DETAILS)
    decoded = Decoded()
    counts, items = decoded.counts, decoded.items
    for resource_group in message.resource_spans if traces else message.resource_logs:
        resource = None
        for scope_group in resource_group.scope_spans if traces else resource_group.scope_logs:
            scope = None
            for item in scope_group.spans if traces else scope_group.log_records:
                raw = item.SerializeToString()
                # (two or three markers: not any(), a generator per span costs as much)
                if not (markers[0] in raw or markers[1] in raw or markers[-1] in raw):
                    kind = Kind.OTHER  # no attribute key or event name to look at
                else:
                    kind = classify(item)
                counts[kind] += 1
                if kind not in wanted and not keep_all:
                    continue
                if resource is None:  # converted once, for the first item that needs it
                    resource = {"attributes": attributes(resource_group.resource.attributes)}
                if scope is None:
                    scope = {"name": scope_group.scope.name, "version": scope_group.scope.version}
                items.append(build(item, kind, scope, resource))
    return decoded


def decode(body: bytes, content_type: str, signal: Signal, keep_all: bool = False) -> Decoded:
    """Decode an OTLP/HTTP export body (already uncompressed) of `signal`. Raises
    OtlpDecodeError for a body that is not one or a content type other than protobuf or JSON,
    ValueError for a `signal` other than traces or logs."""
    message = parse(body, content_type, signal)
    escapes = b"\\u" in body and not content_type.lower().startswith(PROTOBUF_TYPES)
    if keep_all or escapes or any(marker in body for marker in _MARKERS[signal]):
        return walk(message, keep_all)  # (a JSON \\u escape may spell a marker)
    # no GenAI marker anywhere in the body: count, look at nothing
    decoded = Decoded()
    groups = message.resource_spans if signal == "traces" else message.resource_logs
    decoded.counts[Kind.OTHER] = sum(
        len(scope.spans if signal == "traces" else scope.log_records)
        for group in groups
        for scope in (group.scope_spans if signal == "traces" else group.scope_logs)
    )
    return decoded
