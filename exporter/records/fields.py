"""Tolerant readers for the loosely typed fields real logs contain.

Providers, SDKs and log shippers disagree on types (OTLP-JSON sends int64 as a
string, some loggers write token counts as floats), so adapters read through
these helpers instead of trusting a field's type. None of them raises on any
JSON value: a record is rejected for its shape, never for a crash.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import orjson

# Longer digit strings are not counts or timestamps, and Python refuses to
# parse very long ones (int max str digits) anyway.
_MAX_DIGITS = 20


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _digits(value: str) -> int | None:
    text = value.strip()
    # isdigit() alone accepts "²" and other characters int() refuses.
    if text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS:
        return int(text)
    return None


def as_int(value: Any) -> int | None:
    """A non-negative whole count, or None when the field is absent or nonsense."""
    if type(value) is int:  # the common case first (bool, an int subclass, is not a count)
        return value if value >= 0 else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return _digits(value)
    return None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def first_int(mapping: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = mapping.get(key)
        if value is not None and (number := as_int(value)) is not None:  # most keys are absent
            return number
    return None


def sum_ints(*values: int | None) -> int | None:
    """Sum of the counts present; None only when every part is absent."""
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def as_timestamp(value: Any) -> float | None:
    """Epoch seconds from epoch s/ms/us/ns numbers or ISO-8601 strings.

    An ISO time without an offset is read as UTC, not as the exporter's local
    time: the same log must give the same timestamps wherever it is replayed.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            number = _digits(text)
            return as_timestamp(number) if number is not None else None
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
        except (ValueError, OverflowError, OSError):
            return None
        return seconds if seconds > 0 else None
    if isinstance(value, int) and not 0 < value < 10**21:
        return None  # beyond any epoch in ns; float() would overflow on huge ints
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        seconds = float(value)
        # Scale down until the value lands in a plausible epoch-seconds range.
        while seconds > 1e11:
            seconds /= 1000.0
        return seconds
    return None


def dump_json(value: Any) -> str | None:
    """Compact JSON text of a decoded value (tool arguments given as objects).

    orjson refuses integers beyond 64 bits and very deep nesting, both of which
    Python's own decoder accepts, so fall back to the standard library.
    """
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except (TypeError, ValueError):
        pass
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None


def load_json(value: Any) -> Any:
    """Decode `value` when it is a string holding a JSON object or array, else return it.

    Instrumentations often store structured data (messages, finish reasons) as a
    JSON string attribute because span attributes cannot nest.
    """
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def text_of(content: Any) -> str:
    """Text of a message `content` that may be a string, null, or a list of parts."""
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for part in as_list(content):
        if isinstance(part, str):
            pieces.append(part)
        elif isinstance(part, dict) and part.get("type") in (None, "text", "output_text"):
            text = part.get("text", part.get("content"))
            if isinstance(text, str):
                pieces.append(text)
    return "".join(pieces)
