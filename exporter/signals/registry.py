"""The signals' config parameters, and the `signals` section decoded, without importing them.

config_schema.py builds the `signals` section of the JSON Schema from these
declarations, and config.py decodes a validated section into `SignalSettings`;
neither loads the signal modules (numpy, tiktoken). Adding a signal parameter:
one `Param` here, its field in `SignalSettings`, and its use in measure.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.params import Param

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


def _declared(section: str, name: str) -> Any:
    """A parameter's default as declared in SECTIONS (stated there only)."""
    return next(param.default for param in SECTIONS[section] if param.name == name)


@dataclass(frozen=True)
class SignalSettings:
    """The `signals` config section, decoded."""

    refusal_extra_patterns: tuple[str, ...] = ()
    refusal_exclude_patterns: tuple[str, ...] = ()
    format_rules: tuple[dict[str, Any], ...] = ()
    embedding_enabled: bool = field(default=_declared("embedding", "enabled"))
    embedding_path: tuple[str, ...] | None = None
    embedding_dimension: int = field(default=_declared("embedding", "dimension"))
    encodings_dir: str | None = None
    # the `embedding` section as written: saved detector state is keyed by it (state files
    # hold it so), and a baseline must survive a restart with the same config
    embedding_section: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, signals: dict[str, Any]) -> SignalSettings:
        refusal = signals.get("refusal") or {}
        embedding = signals.get("embedding") or {}
        path = embedding.get("path")
        return cls(
            refusal_extra_patterns=tuple(refusal.get("extra_patterns") or ()),
            refusal_exclude_patterns=tuple(refusal.get("exclude_patterns") or ()),
            format_rules=tuple(signals.get("format_validity") or ()),
            embedding_enabled=embedding.get("enabled", cls.embedding_enabled),
            embedding_path=tuple(path.split(".")) if path else None,
            embedding_dimension=embedding.get("dimension", cls.embedding_dimension),
            encodings_dir=(signals.get("tokens") or {}).get("encodings_dir"),
            embedding_section=embedding,
        )
