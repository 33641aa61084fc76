"""Stream labels read from dotted field paths of the original record.

A spec is `path|path|...`: the first path that yields a scalar wins. Paths
walk dicts and list indexes (`choices.0.message.role`); where a key itself
contains dots (OTel attribute names such as `attributes.gen_ai.request.model`)
the longest matching key wins. A path starting with `$` names a field of the
normalized record instead (`$requested_model`, `$served_model`, `$shape`):
that is how the default `model` label finds the model the application asked
for in every shape (envelope `request.model`, LiteLLM `model_group`, OTel
`gen_ai.request.model`) without the user knowing where each shape keeps it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from exporter.records.record import Record

MAX_LABEL_VALUE_LENGTH = 128
MISSING = "unknown"
RECORD_FIELDS = ("requested_model", "served_model", "shape", "finish_reason", "system_fingerprint")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def sanitize_label_value(value: str) -> str:
    """Strip control characters and cap length so one odd record cannot bloat every scrape."""
    value = _CONTROL.sub(" ", value).strip()
    if len(value) > MAX_LABEL_VALUE_LENGTH:
        value = value[: MAX_LABEL_VALUE_LENGTH - 1] + "…"
    return value or MISSING


def _lookup(obj: Any, parts: tuple[str, ...]) -> Any:
    if not parts:
        return obj
    if isinstance(obj, dict):
        for cut in range(len(parts), 0, -1):
            key = ".".join(parts[:cut])
            if key in obj:
                found = _lookup(obj[key], parts[cut:])
                if found is not None:
                    return found
        return None
    if isinstance(obj, list) and parts[0].isdigit():
        index = int(parts[0])
        return _lookup(obj[index], parts[1:]) if index < len(obj) else None
    return None


@dataclass(frozen=True)
class LabelSpec:
    name: str
    paths: tuple[tuple[str, ...], ...]

    @classmethod
    def parse(cls, name: str, spec: str) -> LabelSpec:
        paths = tuple(tuple(p.strip().split(".")) for p in spec.split("|") if p.strip())
        return cls(name=name, paths=paths)

    def value(self, record: Record) -> str:
        for path in self.paths:
            if path[0].startswith("$"):
                found = getattr(record, path[0][1:], None) if len(path) == 1 else None
            else:
                found = _lookup(record.source, path)
            if isinstance(found, str | int | float) and not isinstance(found, bool) and found != "":
                return sanitize_label_value(str(found))
        return MISSING


class StreamLabeler:
    """Turns a record into its stream key: the label values in configured order."""

    def __init__(self, specs: dict[str, str]) -> None:
        self.specs = tuple(LabelSpec.parse(name, spec) for name, spec in specs.items())
        self.names = tuple(spec.name for spec in self.specs)

    def key(self, record: Record) -> tuple[str, ...]:
        return tuple(spec.value(record) for spec in self.specs)
