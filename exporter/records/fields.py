"""Tolerant readers for the loosely typed fields real logs contain.

Providers, SDKs and log shippers disagree on types (OTLP-JSON sends int64 as a
string, some loggers write token counts as floats), so adapters read through
these helpers instead of trusting a field's type.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def as_int(value: Any) -> int | None:
    """A non-negative whole count, or None when the field is absent or nonsense."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def first_int(mapping: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        number = as_int(mapping.get(key))
        if number is not None:
            return number
    return None


def as_timestamp(value: Any) -> float | None:
    """Epoch seconds from epoch s/ms/us/ns numbers or ISO-8601 strings."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return as_timestamp(int(text))
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed.timestamp()
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        seconds = float(value)
        # Scale down until the value lands in a plausible epoch-seconds range.
        while seconds > 1e11:
            seconds /= 1000.0
        return seconds
    return None


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
