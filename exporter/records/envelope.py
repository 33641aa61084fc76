"""Separate the provider response from the wrapper an application logged it in.

A typical line is `{"timestamp", "route", "request": {...}, "response": {...}}`;
gateways such as Helicone nest bodies one level deeper (`request.body`,
`response.body`), and some loggers store a body as the raw JSON text they
received; a bare provider response is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.records.fields import as_dict, as_str, as_timestamp, load_json


# Not frozen: it lives for one normalize call, and a frozen dataclass's __init__
# (object.__setattr__ per field) is measurably slower on this per-record path.
@dataclass(slots=True)
class Envelope:
    request: dict[str, Any]
    response: dict[str, Any]
    timestamp: float | None
    source: dict[str, Any]

    @property
    def requested_model(self) -> str | None:
        return as_str(self.request.get("model"))


_TIMESTAMP_KEYS = ("timestamp", "time", "ts", "@timestamp", "created_at", "created")
_RESPONSE_KEYS = ("choices", "output", "content", "stop_reason")


def _body(part: Any) -> dict[str, Any]:
    """`part` itself, or the gateway's `body` inside it when `part` is not a response."""
    if not isinstance(part, dict):
        part = as_dict(load_json(part))
    body = part.get("body")
    if body is None:  # the common case: no gateway nesting
        return part
    body = load_json(body)
    if isinstance(body, dict) and part.keys().isdisjoint(_RESPONSE_KEYS):
        return body
    return part


def _timestamp(obj: dict[str, Any], response: dict[str, Any]) -> float | None:
    """The first wrapper timestamp that parses, else the response's own creation time."""
    if not obj.keys().isdisjoint(_TIMESTAMP_KEYS):  # most lines carry no timestamp at all
        for key in _TIMESTAMP_KEYS:
            raw = obj.get(key)
            if raw is not None and (timestamp := as_timestamp(raw)) is not None:
                return timestamp
    raw = response.get("created_at", response.get("created"))
    return None if raw is None else as_timestamp(raw)


def unwrap(obj: dict[str, Any]) -> Envelope:
    response = obj.get("response")
    if isinstance(response, str):
        response = load_json(response)
    if isinstance(response, dict):
        request = _body(obj.get("request"))
        response = _body(response)
    else:
        request, response = {}, obj
    return Envelope(
        request=request, response=response, timestamp=_timestamp(obj, response), source=obj
    )
