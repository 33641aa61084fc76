"""The config file's JSON Schema: structure, types and allowed values.

The signals' and the detectors' parameters are declared in their packages'
registries (signals/registry.py, detectors/registry.py) and turned into schema
here. Rules that span several keys (regexes that compile, schema files that load,
detector parameters the chosen method accepts, matchers naming stream labels) are
checked in config.py, which also turns every error into `path.to.key: message`.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from exporter.detectors.baseline_modes import MODES
from exporter.detectors.registry import SETTINGS, SIGNALS
from exporter.params import Param
from exporter.records.detect import FORMATS
from exporter.signals.registry import REQUIRED, RULE_LISTS, SECTIONS

_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string",
               type(None): "null"}

_POSITIVE_INT = {"type": "integer", "minimum": 1}
_FORMAT = {"enum": list(FORMATS)}
# inputs served on the main listener (http, otlp): a token and the push limits
_PUSHED = {
    "type": {},
    "name": {"type": "string", "minLength": 1},
    "bearer_token_file": {"type": ["string", "null"]},
    "max_body_bytes": _POSITIVE_INT,
    "max_decompressed_bytes": _POSITIVE_INT,
    "max_pending_requests": _POSITIVE_INT,
}
# Method parameters are checked against their registry declarations (factory.check), not
# here: the allowed keys depend on the chosen method.
_DURATION = {"type": ["string", "number"]}  # `24h`, `30m`, `7d`, or seconds
_BASELINE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "mode": {"enum": list(MODES)},
        "period": _DURATION,
        "phase": _DURATION,
        "min_records": {"type": "integer", "minimum": 1},
    },
}
_SIGNAL_DETECTOR = {
    "type": "object",
    "properties": {"method": {"type": "string"}, "enabled": {"type": "boolean"},
                   "baseline": _BASELINE},
}


def _param_schema(param: Param) -> dict[str, Any]:
    if param.choices is not None:
        return {"enum": list(param.choices)}
    kind = param.type
    if isinstance(kind, types.UnionType):  # `str | None`
        return {"type": [_JSON_TYPES[member] for member in typing.get_args(kind)]}
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return {"type": "array", "items": {"type": _JSON_TYPES[item]}}
    if typing.get_origin(kind) is dict:
        _, value = typing.get_args(kind)
        return {"type": "object", "additionalProperties": {"type": _JSON_TYPES[value]}}
    schema: dict[str, Any] = {"type": _JSON_TYPES[kind]}
    if param.minimum is not None:
        schema["minimum"] = param.minimum
    return schema


def _section_schema(name: str) -> dict[str, Any]:
    section: dict[str, Any] = {"type": "object", "additionalProperties": False}
    if name in REQUIRED:
        section["required"] = list(REQUIRED[name])
    section["properties"] = {param.name: _param_schema(param) for param in SECTIONS[name]}
    return {"type": "array", "items": section} if name in RULE_LISTS else section

_TOPIC = "^[a-zA-Z0-9._-]{1,249}$"  # Kafka's legal topic names

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": ["file", "http", "otlp", "kafka"]}},
                "allOf": [
                    {
                        "if": {"properties": {"type": {"const": "file"}}},
                        "then": {
                            "additionalProperties": False,
                            "required": ["paths"],
                            "properties": {
                                "type": {},
                                "name": {"type": "string", "minLength": 1},
                                "paths": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "string", "minLength": 1},
                                },
                                "start_at": {"enum": ["end", "beginning"]},
                                "format": _FORMAT,
                                "poll_interval": {"type": "number", "exclusiveMinimum": 0},
                                "max_line_bytes": _POSITIVE_INT,
                            },
                        },
                    },
                    {
                        "if": {"properties": {"type": {"const": "http"}}},
                        "then": {
                            "additionalProperties": False,
                            "properties": {**_PUSHED, "format": _FORMAT},
                        },
                    },
                    {
                        "if": {"properties": {"type": {"const": "otlp"}}},
                        "then": {
                            "additionalProperties": False,
                            "properties": {
                                **_PUSHED,
                                "join_wait": {"type": "number", "minimum": 0},
                                "join_capacity": _POSITIVE_INT,
                                "grpc_address": {"type": ["string", "null"],
                                                 "pattern": "^[^:]*:[0-9]+$"},
                            },
                        },
                    },
                    {
                        "if": {"properties": {"type": {"const": "kafka"}}},
                        "then": {
                            "additionalProperties": False,
                            "required": ["bootstrap_servers", "topics"],
                            "properties": {
                                "type": {},
                                "name": {"type": "string", "minLength": 1},
                                "bootstrap_servers": {"type": "string", "minLength": 1},
                                "topics": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "string", "pattern": _TOPIC},
                                },
                                "group_id": {"type": "string", "minLength": 1},
                                "format": _FORMAT,
                                "changelog_topic": {"type": ["string", "null"],
                                                    "pattern": _TOPIC},
                                "client_id": {"type": ["string", "null"]},
                                "instance_id": {"type": ["string", "null"]},
                                "start_at": {"enum": ["end", "beginning"]},
                                "max_message_bytes": _POSITIVE_INT,
                                "session_timeout": {"type": "number", "minimum": 1},
                                "repartition": {"type": "boolean"},
                                "properties": {
                                    "type": "object",
                                    "additionalProperties": {
                                        "type": ["string", "number", "boolean"]},
                                },
                            },
                        },
                    },
                ],
            },
        },
        "format": _FORMAT,
        "stream_labels": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"type": "string", "minLength": 1},
        },
        "max_streams": _POSITIVE_INT,
        "workers": {},  # removed: a config error that says how to scale (config.py)
        "state_dir": {"type": ["string", "null"]},
        "checkpoint_interval": {"type": "number", "exclusiveMinimum": 0},
        "signals": {
            "type": "object",
            "additionalProperties": False,
            "properties": {name: _section_schema(name) for name in SECTIONS},
        },
        "detectors": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                **{param.name: _param_schema(param) for param in SETTINGS},
                "baseline": _BASELINE,
                **{signal: _SIGNAL_DETECTOR for signal in SIGNALS},
            },
        },
        "evidence": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "texts": _POSITIVE_INT,
                "examples": _POSITIVE_INT,
                "max_chars": {"type": "integer", "minimum": 10},
            },
        },
    },
}
