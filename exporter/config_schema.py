"""The config file's JSON Schema: structure, types and allowed values.

Rules that span several keys (regexes that compile, schema files that load,
detector parameters a detector accepts, matchers naming stream labels) are
checked in config.py, which also turns every error into `path.to.key: message`.
"""

from __future__ import annotations

from typing import Any

from exporter.detectors.factory import SIGNALS
from exporter.records.detect import FORMATS

_POSITIVE_INT = {"type": "integer", "minimum": 1}
_FORMAT = {"enum": list(FORMATS)}
_MATCHERS = {"type": "object", "additionalProperties": {"type": "string"}}
# Method parameters are checked by constructing the detector (see _detector_errors).
_SIGNAL_DETECTOR = {
    "type": "object",
    "properties": {"method": {"type": "string"}, "enabled": {"type": "boolean"}},
}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": ["file", "http"]}},
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
                            "properties": {
                                "type": {},
                                "name": {"type": "string", "minLength": 1},
                                "bearer_token_file": {"type": ["string", "null"]},
                                "format": _FORMAT,
                                "max_body_bytes": _POSITIVE_INT,
                                "max_decompressed_bytes": _POSITIVE_INT,
                                "max_pending_requests": _POSITIVE_INT,
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
        "workers": {"type": "integer", "minimum": 1, "maximum": 64},
        "state_dir": {"type": ["string", "null"]},
        "checkpoint_interval": {"type": "number", "exclusiveMinimum": 0},
        "signals": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "refusal": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "extra_patterns": {"type": "array", "items": {"type": "string"}},
                        "exclude_patterns": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "format_validity": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["expect"],
                        "properties": {
                            "match": _MATCHERS,
                            "match_re": _MATCHERS,
                            "expect": {"enum": ["json", "json_schema", "regex"]},
                            "schema_file": {"type": ["string", "null"]},
                            "pattern": {"type": ["string", "null"]},
                            "allow_fenced": {"type": "boolean"},
                            "tools": {"type": "boolean"},
                        },
                    },
                },
                "embedding": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "path": {"type": ["string", "null"]},
                        "dimension": {"enum": [2**k for k in range(4, 13)]},
                    },
                },
                "tokens": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"encodings_dir": {"type": ["string", "null"]}},
                },
            },
        },
        "detectors": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "expected_run_time": {"type": "integer", "minimum": 10},
                "baseline_size": {"type": "integer", "minimum": 20},
                "window_size": _POSITIVE_INT,
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
