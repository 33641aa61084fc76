"""Format validity: does a reply have the shape its consumer parses?

Rules come from config and apply to the streams their label matchers select
(first matching rule wins). Order of checks, and why:

1. a refusal is not format-checked at all: the refusal signal owns it, and
   counting it twice would make a refusal spike page as a format incident too;
2. truncation (normalized finish reason `length`) is invalid as `truncated`
   whatever the text looks like: a cut-off JSON that happens to parse is
   still missing data;
3. a stream that expects tools checks tool-call arguments (each must parse as
   JSON) on replies that call tools;
4. otherwise the text: `empty`, then `json` (an object or array; with
   `allow_fenced`, a reply that is exactly one ```json fenced block is
   accepted, prose around a fence is not), `json_schema` (validated by the
   `jsonschema` library against the schema file), or `regex` (the whole
   stripped reply must match).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import yaml

from exporter.records.record import Record

_FENCE = re.compile(r"\A```[ \t]*(?:json|JSON|json5)?[ \t]*\r?\n(.*?)\r?\n?```\Z", re.DOTALL)
INVALID_REASONS = (
    "truncated", "empty", "not_json", "json_scalar", "schema", "regex", "tool_arguments"
)


@dataclass(frozen=True)
class FormatRule:
    expect: str
    match: dict[str, str] = field(default_factory=dict)
    match_re: dict[str, re.Pattern[str]] = field(default_factory=dict)
    pattern: re.Pattern[str] | None = None
    validator: Any = None
    allow_fenced: bool = False
    tools: bool = False

    def selects(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match.items()) and all(
            p.fullmatch(labels.get(k, "")) for k, p in self.match_re.items()
        )


def load_schema_validator(path: str) -> Any:
    """A validator for the schema file (JSON or YAML); the class follows the schema's `$schema`."""
    text = Path(path).read_text(encoding="utf-8")
    schema = yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else orjson.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def build_rules(specs: list[dict[str, Any]]) -> list[FormatRule]:
    rules = []
    for spec in specs:
        expect = spec["expect"]
        rules.append(
            FormatRule(
                expect=expect,
                match=dict(spec.get("match") or {}),
                match_re={k: re.compile(v) for k, v in (spec.get("match_re") or {}).items()},
                pattern=re.compile(spec["pattern"], re.DOTALL) if spec.get("pattern") else None,
                validator=load_schema_validator(spec["schema_file"])
                if expect == "json_schema"
                else None,
                allow_fenced=bool(spec.get("allow_fenced", False)),
                tools=bool(spec.get("tools", False)),
            )
        )
    return rules


def _parse_json(text: str, allow_fenced: bool) -> tuple[Any, str | None]:
    stripped = text.strip()
    if allow_fenced:
        fenced = _FENCE.match(stripped)
        if fenced:
            stripped = fenced.group(1).strip()
    try:
        value = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None, "not_json"
    if not isinstance(value, dict | list):
        return None, "json_scalar"
    return value, None


def check(rule: FormatRule, record: Record) -> str | None:
    """The invalid reason, or None when the reply is valid for `rule`."""
    if record.finish_reason == "length":
        return "truncated"
    if rule.tools and record.tool_calls:
        for call in record.tool_calls:
            try:
                orjson.loads(call.arguments or "")
            except orjson.JSONDecodeError:
                return "tool_arguments"
        return None
    if not record.output_text.strip():
        return "empty"
    if rule.expect == "regex":
        assert rule.pattern is not None
        return None if rule.pattern.fullmatch(record.output_text.strip()) else "regex"
    value, reason = _parse_json(record.output_text, rule.allow_fenced)
    if reason is not None:
        return reason
    if rule.expect == "json_schema" and not rule.validator.is_valid(value):
        return "schema"
    return None


class FormatChecker:
    """Finds the rule for a stream once (cached by label values), then checks records."""

    def __init__(self, rules: list[FormatRule]) -> None:
        self.rules = rules
        self._by_stream: dict[tuple[str, ...], FormatRule | None] = {}

    def rule_for(self, key: tuple[str, ...], labels: dict[str, str]) -> FormatRule | None:
        if key not in self._by_stream:
            self._by_stream[key] = next((r for r in self.rules if r.selects(labels)), None)
        return self._by_stream[key]

    def rule_for_key(self, key: tuple[str, ...], names: tuple[str, ...]) -> FormatRule | None:
        """Per-record entry: the label dict is built only the first time a stream is seen."""
        if not self.rules:  # the usual config: no format rules, nothing to look up
            return None
        if key in self._by_stream:
            return self._by_stream[key]
        return self.rule_for(key, dict(zip(names, key, strict=True)))
