"""LiteLLM `StandardLoggingPayload` (its logging callbacks and the proxy's spend logs).

The payload wraps a provider response (usually an OpenAI-shaped
`ModelResponse`, whatever the upstream provider; a Responses or Anthropic
body for those passthrough routes) and adds top-level token counts. The model
the application asked for is `model_group` on the proxy (the router alias),
otherwise `model`; the served version is the wrapped response's `model`.
A failed call (`status: "failure"`) becomes an `error` record: its response
field holds nothing usable, but the failure rate is worth watching. Its
`completion_tokens` is a placeholder 0, not a measurement, so it is dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from exporter.records.envelope import Envelope
from exporter.records.errors import RejectedRecord
from exporter.records.fields import as_int, as_str, as_timestamp, load_json
from exporter.records.record import Record

NAME = "litellm"
_MARKERS = ("call_type", "model_group", "hidden_params", "model_map_information", "response_cost")


def looks_like(obj: dict[str, Any]) -> bool:
    """A `response` beside at least two LiteLLM-only keys (a plain loop: this runs per record)."""
    if "response" not in obj:
        return False
    found = 0
    for marker in _MARKERS:
        if marker in obj:
            found += 1
    return found >= 2


def _inner(
    payload: dict[str, Any],
    timestamp: float | None,
    normalize_response: Callable[[Envelope], list[Record]],
) -> list[Record]:
    response = load_json(payload.get("response"))
    if payload.get("status") == "failure":
        return [
            Record(shape=NAME, output_text="", finish_reason="error", raw_finish_reason="failure")
        ]
    if isinstance(response, dict) and response:
        return normalize_response(
            Envelope(request={}, response=response, timestamp=timestamp, source=payload)
        )
    if isinstance(response, str) and response:
        return [Record(shape=NAME, output_text=response)]
    raise RejectedRecord("missing_output", "LiteLLM payload has no response")


def normalize(
    envelope: Envelope, normalize_response: Callable[[Envelope], list[Record]]
) -> list[Record]:
    payload = envelope.source
    requested = as_str(payload.get("model_group")) or as_str(payload.get("model"))
    timestamp = as_timestamp(payload.get("endTime")) or as_timestamp(payload.get("startTime"))
    failed = payload.get("status") == "failure"
    output_tokens = None if failed else as_int(payload.get("completion_tokens"))
    return [
        dataclasses.replace(
            record,
            shape=NAME,
            requested_model=requested or record.requested_model,
            served_model=record.served_model or as_str(payload.get("model")),
            input_tokens=_prefer(as_int(payload.get("prompt_tokens")), record.input_tokens),
            output_tokens=_prefer(output_tokens, record.output_tokens),
            timestamp=timestamp or record.timestamp or envelope.timestamp,
            source=payload,
        )
        for record in _inner(payload, timestamp, normalize_response)
    ]


def _prefer(first: int | None, second: int | None) -> int | None:
    return first if first is not None else second
