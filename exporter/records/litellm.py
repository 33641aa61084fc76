"""LiteLLM `StandardLoggingPayload` (its logging callbacks and the proxy's spend logs).

The payload wraps a provider response (usually OpenAI-shaped, whatever the
upstream provider) and adds top-level token counts. The model the application
asked for is `model_group` on the proxy (the router alias), otherwise `model`;
the served version is the wrapped response's `model`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from exporter.records.envelope import Envelope
from exporter.records.errors import RejectedRecord
from exporter.records.fields import as_int, as_str, as_timestamp
from exporter.records.record import Record

NAME = "litellm"
_MARKERS = ("call_type", "model_group", "hidden_params", "model_map_information", "response_cost")


def looks_like(obj: dict[str, Any]) -> bool:
    return "response" in obj and sum(marker in obj for marker in _MARKERS) >= 2


def normalize(
    envelope: Envelope, normalize_response: Callable[[Envelope], list[Record]]
) -> list[Record]:
    payload = envelope.source
    requested = as_str(payload.get("model_group")) or as_str(payload.get("model"))
    timestamp = as_timestamp(payload.get("endTime")) or as_timestamp(payload.get("startTime"))
    response = payload.get("response")
    if isinstance(response, dict) and response:
        inner = normalize_response(
            Envelope(request={}, response=response, timestamp=timestamp, source=payload)
        )
    elif payload.get("status") == "failure":
        inner = [Record(shape=NAME, output_text="", finish_reason="error", raw_finish_reason="failure")]
    elif isinstance(response, str):
        inner = [Record(shape=NAME, output_text=response)]
    else:
        raise RejectedRecord("missing_output", "LiteLLM payload has no response")
    return [
        dataclasses.replace(
            record,
            shape=NAME,
            requested_model=requested or record.requested_model,
            served_model=record.served_model or as_str(payload.get("model")),
            input_tokens=_prefer(as_int(payload.get("prompt_tokens")), record.input_tokens),
            output_tokens=_prefer(as_int(payload.get("completion_tokens")), record.output_tokens),
            timestamp=timestamp or record.timestamp or envelope.timestamp,
            source=payload,
        )
        for record in inner
    ]


def _prefer(first: int | None, second: int | None) -> int | None:
    return first if first is not None else second
