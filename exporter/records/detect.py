"""Pick the adapter for a record by its shape.

A record that matches no shape is rejected as `unknown_format`, never
guessed: a wrong guess would feed silent garbage to the detectors.
"""

from __future__ import annotations

from typing import Any

from exporter.records import anthropic, langfuse, litellm, openai_chat, openai_responses, otel_genai
from exporter.records.envelope import Envelope, unwrap
from exporter.records.errors import RejectedRecord
from exporter.records.record import Record

FORMATS = (
    "auto",
    "openai_chat",
    "openai_responses",
    "anthropic",
    "otel_genai",
    "litellm",
    "langfuse",
)
_RESPONSE_ADAPTERS = (openai_responses, anthropic, openai_chat)


def _response_adapter(response: dict[str, Any]) -> Any:
    for adapter in _RESPONSE_ADAPTERS:
        if adapter.looks_like(response):
            return adapter
    return None


def _unknown_format(response: dict[str, Any]) -> RejectedRecord:
    keys = ", ".join(sorted(str(k) for k in response)[:8])
    return RejectedRecord(
        "unknown_format",
        f"no known response shape (OpenAI chat/responses, Anthropic, OTel GenAI, LiteLLM) "
        f"matches an object with keys [{keys}]",
    )


def _normalize_response(envelope: Envelope) -> list[Record]:
    adapter = _response_adapter(envelope.response)
    if adapter is None:
        raise _unknown_format(envelope.response)
    return adapter.normalize(envelope)


def _forced(fmt: str, obj: dict[str, Any], envelope: Envelope) -> list[Record]:
    if fmt == "litellm":
        if "response" not in obj:
            raise RejectedRecord("unknown_format", "not a LiteLLM payload: no 'response' key")
        return litellm.normalize(envelope, _normalize_response)
    if fmt == "langfuse":
        if not langfuse.looks_like(obj):
            raise RejectedRecord("unknown_format", "not a Langfuse GENERATION observation")
        return langfuse.normalize(envelope, _normalize_response)
    if fmt == "otel_genai":
        if not otel_genai.looks_like(obj):
            raise RejectedRecord("unknown_format", "no gen_ai.* attributes found")
        return otel_genai.normalize(envelope)
    adapter = {a.NAME: a for a in _RESPONSE_ADAPTERS}.get(fmt)
    if adapter is None:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not adapter.looks_like(envelope.response):
        raise RejectedRecord("unknown_format", f"record does not have the {fmt} shape")
    return adapter.normalize(envelope)


def normalize(obj: Any, fmt: str = "auto") -> list[Record]:
    """Normalize one decoded JSON value into records (an OTLP export may hold several).

    Raises RejectedRecord for any value that is not a usable record, and
    ValueError only for a `fmt` outside FORMATS (a configuration bug).
    """
    if not isinstance(obj, dict):
        raise RejectedRecord(
            "unknown_format", f"a record must be a JSON object, got {type(obj).__name__}"
        )
    envelope = unwrap(obj)
    if fmt != "auto":
        return _forced(fmt, obj, envelope)
    if litellm.looks_like(obj):
        return litellm.normalize(envelope, _normalize_response)
    if langfuse.looks_like(obj):
        return langfuse.normalize(envelope, _normalize_response)
    if envelope.response is obj:
        if otel_genai.looks_like(obj):
            return otel_genai.normalize(envelope)
        return _normalize_response(envelope)
    # A wrapped provider response wins over stray gen_ai.* keys in the wrapper. The
    # adapter is looked up once: detection is a good part of a record's cost.
    adapter = _response_adapter(envelope.response)
    if adapter is not None:
        return adapter.normalize(envelope)
    if otel_genai.looks_like(obj):
        return otel_genai.normalize(envelope)
    raise _unknown_format(envelope.response)
