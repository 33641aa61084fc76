"""Decoding of OTLP-JSON attribute lists.

OTLP-JSON writes attributes as `[{"key": ..., "value": {"stringValue": ...}}]`
and int64 values as strings. Both the OTel GenAI adapter and the stream-label
paths read attributes through here, so `attributes.gen_ai.request.model`
works whether attributes are a plain mapping or an OTLP list.
"""

from __future__ import annotations

from typing import Any

from exporter.records.fields import as_dict, as_int, as_list

_SCALAR_KEYS = ("stringValue", "boolValue", "doubleValue")
_VALUE_KEYS = (*_SCALAR_KEYS, "intValue", "arrayValue", "kvlistValue", "bytesValue")


def is_any_value(value: Any) -> bool:
    """True for an OTLP-JSON AnyValue wrapper such as `{"stringValue": "..."}`."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _VALUE_KEYS


def any_value(value: Any) -> Any:
    """Decode an OTLP-JSON AnyValue; a value that is not one is returned as is."""
    if not isinstance(value, dict):
        return value
    for key in _SCALAR_KEYS:
        if key in value:
            return value[key]
    if "intValue" in value:
        return as_int(value["intValue"])
    if "arrayValue" in value:
        return [any_value(v) for v in as_list(as_dict(value["arrayValue"]).get("values"))]
    if "kvlistValue" in value:
        return flatten_attributes(as_dict(value["kvlistValue"]).get("values"))
    return None


def is_key_value_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(item, dict) and isinstance(item.get("key"), str) for item in value)
    )


def flatten_attributes(attributes: Any) -> dict[str, Any]:
    """Attributes as a plain dict, whether given as a mapping or an OTLP key/value list."""
    if isinstance(attributes, dict):
        return attributes
    flat: dict[str, Any] = {}
    for item in as_list(attributes):
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            flat[item["key"]] = any_value(item.get("value"))
    return flat
