"""Stream labels read from dotted field paths of the original record.

A spec is `path|path|...`: the first path that yields a scalar wins. Paths
walk dicts and list indexes (`choices.0.message.role`); where a key itself
contains dots (OTel attribute names such as `attributes.gen_ai.request.model`)
the longest matching key wins, and OTLP-JSON `[{key, value}]` attribute lists
are searched by key.

`model` is special: it must be the model the application asked for, so that a
provider silently serving a new snapshot shows up as drift inside one stream
rather than as a new stream without a baseline. The adapters know where each
shape keeps that (`model_group` for LiteLLM, `gen_ai.request.model` for OTel,
the envelope's `request.model`), so the record's requested model ranks right
after the first configured path and before the fallback paths (the default
`request.model|response.model` would otherwise pick LiteLLM's served version
from `response.model`); the served model is the last resort.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from exporter.records.otlp import any_value, is_key_value_list
from exporter.records.record import Record

MAX_LABEL_VALUE_LENGTH = 128
MISSING = "unknown"
_CLEAN_CACHE_SIZE = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def sanitize_label_value(value: str) -> str:
    """Make any string a safe label value.

    Control characters go, lone surrogates (which Python's JSON decoder lets
    through and UTF-8 cannot encode, breaking every later scrape) are
    replaced, and the length is capped so one odd record cannot bloat every
    scrape.
    """
    value = value.encode("utf-8", "replace").decode("utf-8")
    value = _CONTROL.sub(" ", value).strip()
    if len(value) > MAX_LABEL_VALUE_LENGTH:
        value = value[: MAX_LABEL_VALUE_LENGTH - 1] + "…"
    return value or MISSING


def _index(part: str) -> int | None:
    return int(part) if part.isascii() and part.isdigit() and len(part) < 10 else None


def lookup_path(obj: Any, parts: tuple[str, ...]) -> Any:
    """The value at a split dotted path (any JSON value), or None where it leads nowhere.

    Public so other record fields named by a path (a user-supplied embedding)
    are found with exactly the same rules as label values.
    """
    return _compiled_path(parts).find(obj) if parts else obj


def _scalar(value: Any) -> str | None:
    if type(value) is str:  # the usual label value; str() of a str is the str itself
        return value
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    return None


@dataclass(frozen=True, slots=True)
class _Path:
    """A non-empty split dotted path, with what each step may name worked out once, not per
    record: the one implementation of the lookup rules in the module docstring.

    `keys` lists, longest first, each key the path may name in a dict (`a.b.c`, `a.b`, `a`)
    with what is left of the path after it (None when nothing is). In a list the first part
    is an index (`index`, then `after` for the rest) or else a key of an OTLP `[{key, value}]`
    list, searched like a dict with the whole path.
    """

    keys: tuple[tuple[str, _Path | None], ...]
    index: int | None
    after: _Path | None

    @classmethod
    def compile(cls, parts: tuple[str, ...]) -> _Path:
        # Built from the end so each remainder is compiled once (quadratic in the depth).
        built: dict[int, _Path] = {}
        for start in range(len(parts) - 1, -1, -1):
            rest = parts[start:]
            keys = tuple(
                (".".join(rest[:cut]), built.get(start + cut)) for cut in range(len(rest), 0, -1)
            )
            built[start] = cls(keys, _index(rest[0]), built.get(start + 1))
        return built[0]

    def find(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            for key, rest in self.keys:
                if key in obj:
                    found = obj[key] if rest is None else rest.find(obj[key])
                    if found is not None:
                        return found
            return None
        if isinstance(obj, list):
            if self.index is not None:
                if self.index >= len(obj):
                    return None
                item = obj[self.index]
                return item if self.after is None else self.after.find(item)
            if is_key_value_list(obj):
                return self.find({item["key"]: any_value(item.get("value")) for item in obj})
        return None


@lru_cache(maxsize=64)
def _compiled_path(parts: tuple[str, ...]) -> _Path:
    """`lookup_path`'s callers pass one configured path per record: compile it once."""
    return _Path.compile(parts)


@dataclass(frozen=True)
class LabelSpec:
    name: str
    paths: tuple[tuple[str, ...], ...]
    _compiled: tuple[_Path, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", tuple(_Path.compile(p) for p in self.paths))

    @classmethod
    def parse(cls, name: str, spec: str) -> LabelSpec:
        paths = tuple(tuple(p.strip().split(".")) for p in spec.split("|") if p.strip())
        return cls(name=name, paths=paths)

    def raw_value(self, record: Record) -> str | None:
        """The first non-empty scalar along the paths (see the module docstring), unsanitized;
        the later candidates are looked up only when the first path finds nothing."""
        paths, source = self._compiled, record.source
        text = _scalar(paths[0].find(source)) if paths else None
        if text:
            return text
        model = self.name == "model"
        if model and (text := _scalar(record.requested_model)):
            return text
        for path in paths[1:]:
            if text := _scalar(path.find(source)):
                return text
        return _scalar(record.served_model) if model else None

    def value(self, record: Record) -> str:
        text = self.raw_value(record)
        return sanitize_label_value(text) if text else MISSING


class StreamLabeler:
    """Turns a record into its stream key: the label values in configured order."""

    def __init__(self, specs: dict[str, str]) -> None:
        self.specs = tuple(LabelSpec.parse(name, spec) for name, spec in specs.items())
        self.names = tuple(spec.name for spec in self.specs)
        # raw value -> label value: a stream's values repeat on every record, and sanitizing
        # costs more than the lookup; bounded, so request ids used as labels cannot grow it
        self._clean: dict[str | None, str] = {None: MISSING}

    def key(self, record: Record) -> tuple[str, ...]:
        # A plain loop: per record, a generator or comprehension costs as much as a label.
        clean, values = self._clean, []
        for spec in self.specs:
            raw = spec.raw_value(record)
            values.append(clean.get(raw) or self._sanitized(raw))
        return tuple(values)

    def _sanitized(self, raw: str | None) -> str:
        """The label value for a raw value not in the cache (sanitizing never gives "", so
        `key`'s `or` falls through only on a miss; None is always cached)."""
        assert raw is not None
        clean = sanitize_label_value(raw)
        if len(self._clean) >= _CLEAN_CACHE_SIZE:
            self._clean = {None: MISSING}
        self._clean[raw] = clean
        return clean
