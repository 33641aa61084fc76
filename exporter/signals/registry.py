"""The signals' config parameters, and the `signals` section decoded, without importing them.

config_schema.py builds the `signals` section of the JSON Schema from these
declarations, and config.py decodes a validated section into `SignalSettings`;
neither loads the signal modules (numpy, tiktoken). Adding a signal parameter:
one `Param` here, its field in `SignalSettings`, and its use in measure.py.
"""

from __future__ import annotations

from exporter.detectors.registry import Param

# 2**4 .. 2**12: the built-in embedding hashes features into a power of two of buckets
EMBEDDING_DIMENSIONS = tuple(2**k for k in range(4, 13))
FORMAT_EXPECTATIONS = ("json", "json_schema", "regex")

SECTIONS: dict[str, tuple[Param, ...]] = {
    "refusal": (
        Param("extra_patterns", list[str], ()),
        Param("exclude_patterns", list[str], ()),
    ),
    # a list of rules, first match wins (signals/format.py); `expect` is required
    "format_validity": (
        Param("match", dict[str, str]),
        Param("match_re", dict[str, str]),
        Param("expect", str, choices=FORMAT_EXPECTATIONS),
        Param("schema_file", str | None),
        Param("pattern", str | None),
        Param("allow_fenced", bool, False),
        Param("tools", bool, False),
    ),
    "embedding": (
        Param("enabled", bool, True),
        Param("path", str | None),
        Param("dimension", int, 256, choices=EMBEDDING_DIMENSIONS),
    ),
    "tokens": (Param("encodings_dir", str | None),),
}
RULE_LISTS = frozenset({"format_validity"})  # sections that are lists of objects
REQUIRED = {"format_validity": ("expect",)}
