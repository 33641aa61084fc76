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


@dataclass(frozen=True, slots=True)
class Envelope:
    request: dict[str, Any]
    response: dict[str, Any]
    timestamp: float | None
    source: dict[str, Any]

    @property
    def requested_model(self) -> str | None:
        return as_str(self.request.get("model"))


_TIMESTAMP_KEYS = ("timestamp", "time", "ts", "@timestamp", "created_at", "created")


def _body(part: Any) -> dict[str, Any]:
    part = as_dict(load_json(part))
    body = load_json(part.get("body"))
    if isinstance(body, dict) and not _looks_like_response(part):
        return body
    return part


def _looks_like_response(obj: dict[str, Any]) -> bool:
    return any(key in obj for key in ("choices", "output", "content", "stop_reason"))


def unwrap(obj: dict[str, Any]) -> Envelope:
    response = load_json(obj.get("response"))
    if isinstance(response, dict):
        request = _body(obj.get("request"))
        response = _body(response)
    else:
        request, response = {}, obj
    timestamp = None
    for key in _TIMESTAMP_KEYS:
        raw = obj.get(key)
        if raw is not None and (timestamp := as_timestamp(raw)) is not None:
            break
    if timestamp is None:
        timestamp = as_timestamp(response.get("created_at", response.get("created")))
    return Envelope(request=request, response=response, timestamp=timestamp, source=obj)
