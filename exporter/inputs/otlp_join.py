"""Chat spans joined with the log records that carry their text, across OTLP exports.

The stateful half of the native OTLP receiver (issue 15), after `otlp_decode`: the legacy
openai-v2 instrumentation sends a span's reply as `gen_ai.choice` log records to /v1/logs, in
another request and in either order; util-genai's `event_only` mode sends it in an
operation-details log record. `SpanJoin` holds each half by trace and span id until the other
comes, within a bounded wait and memory, and drops a second span of one response id.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from exporter.inputs.otlp_decode import (
    CHOICE_EVENT,
    FINISH,
    OUTPUT,
    Item,
    Kind,
    has_output,
    mark_without_text,
)


@dataclass(slots=True)
class JoinStats:
    joined: int = 0  # spans that got their text from log records
    expired: int = 0  # spans whose text did not come in time: passed on without it
    evicted: int = 0  # spans pushed out by the capacity cap: passed on without text
    duplicates: int = 0  # a span already passed on, or another span of its response id
    events_expired: int = 0  # log records whose span did not come in time
    events_evicted: int = 0  # log records pushed out by the capacity cap
    events_dropped: int = 0  # log records of a span that had its text already
    unjoinable: int = 0  # log records without a span id: passed on alone


@dataclass(slots=True)
class _Waiting:
    deadline: float
    span: Item | None = None
    partners: list[Item] = field(default_factory=list)


class SpanJoin:
    """Holds chat spans without text, and log records carrying a span's text, by trace and span
    id until the partner comes or `wait` seconds pass; at most `capacity` entries, the oldest
    pushed out first. Pure: the caller passes `now` (any monotonic clock) and gets span dicts
    ready for the adapter. A span given up on goes out without text (`mark_without_text`), so
    each call still counts once.

    Spans are also deduplicated by `gen_ai.response.id` within `wait`: the anthropic SDK traces
    each call beside OpenLLMetry's span of it, in another trace. A span with text wins over a
    waiting one without; of two with text, the first. A retried export's span is a duplicate
    too. The log records of one span are expected in one `add` call (one export)."""

    def __init__(self, wait: float = 5.0, capacity: int = 10_000) -> None:
        self.wait, self.capacity = wait, capacity
        self.stats = JoinStats()
        self._waiting: OrderedDict[bytes, _Waiting] = OrderedDict()
        self._done: OrderedDict[bytes | str, float] = OrderedDict()  # span keys, response ids
        self._held: dict[str, bytes] = {}  # response id -> key of its waiting span

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, items: Iterable[Item], now: float) -> list[dict[str, Any]]:
        """Span dicts ready for the adapter: chat spans with text, spans joined now and spans
        the capacity cap pushed out. Items of other kinds are ignored."""
        out: list[dict[str, Any]] = []
        partners: dict[bytes, list[Item]] = {}
        for item in items:
            if item.kind is Kind.CHAT:
                self._span(item, now, out)
            elif item.kind is Kind.CHOICE or item.kind is Kind.DETAILS:
                if item.key.strip(b"\0"):
                    partners.setdefault(item.key, []).append(item)
                else:  # no span to wait for: the record stands alone
                    self.stats.unjoinable += 1
                    out.append(item.value)
        for key, group in partners.items():
            self._partners(key, group, now, out)
        return out

    def expire(self, now: float) -> list[dict[str, Any]]:
        """Spans whose text did not come by their deadline, without text; drops such records."""
        out: list[dict[str, Any]] = []
        waiting, done = self._waiting, self._done
        while waiting and next(iter(waiting.values())).deadline <= now:
            _, entry = waiting.popitem(last=False)
            self._give_up(entry, now, out, expired=True)
        while done and next(iter(done.values())) <= now:
            done.popitem(last=False)
        return out

    def _span(self, item: Item, now: float, out: list[dict[str, Any]]) -> None:
        rid, key, stats = item.response_id, item.key, self.stats
        if key in self._done or (rid is not None and rid in self._done):
            stats.duplicates += 1
            return
        entry = self._waiting.get(key)
        if not item.needs_join:
            if entry is not None:  # records that came first, or the same span without text
                self._pop(key)
                stats.events_dropped += len(entry.partners)
                stats.duplicates += entry.span is not None
            twin = self._held.get(rid) if rid is not None else None
            if twin is not None and self._pop(twin) is not None:
                stats.duplicates += 1
            self._send(item, now, out)
        elif entry is not None and entry.span is None:
            del self._waiting[key]
            self._join(item, entry.partners, now, out)
        elif entry is not None or (rid is not None and rid in self._held):
            stats.duplicates += 1
        else:
            self._waiting[key] = _Waiting(now + self.wait, span=item)
            if rid is not None:
                self._held[rid] = key
            self._cap(now, out)

    def _pop(self, key: bytes) -> _Waiting | None:
        entry = self._waiting.pop(key, None)
        if entry is not None and entry.span is not None and entry.span.response_id is not None:
            self._held.pop(entry.span.response_id, None)
        return entry

    def _partners(self, key: bytes, group: list[Item], now: float, out: list) -> None:
        if key in self._done:
            self.stats.events_dropped += len(group)
            return
        entry = self._waiting.get(key)
        if entry is None:
            self._waiting[key] = _Waiting(now + self.wait, partners=group)
            self._cap(now, out)
        elif entry.span is None:
            entry.partners.extend(group)
        else:
            del self._waiting[key]
            self._join(entry.span, group, now, out)

    def _join(self, span: Item, partners: list[Item], now: float, out: list) -> None:
        """`gen_ai.choice` records become span events (otel_genai reads those); an
        operation-details record lends its output messages and finish reasons."""
        value, attrs = span.value, span.value["attributes"]
        for partner in partners:
            record = partner.value
            if partner.kind is Kind.CHOICE:
                time = record["timeUnixNano"] or record["observedTimeUnixNano"]
                event = {"timeUnixNano": time, "name": CHOICE_EVENT, "body": record["body"]}
                value["events"].append({**event, "attributes": record["attributes"]})
            else:
                for name in (OUTPUT, FINISH):
                    if name in record["attributes"] and name not in attrs:
                        attrs[name] = record["attributes"][name]
        self.stats.joined += 1
        if not has_output(value):
            mark_without_text(value)
        self._send(span, now, out)

    def _give_up(self, entry: _Waiting, now: float, out: list, expired: bool) -> None:
        if entry.span is None:
            if expired:
                self.stats.events_expired += len(entry.partners)
            else:
                self.stats.events_evicted += len(entry.partners)
            return
        if expired:
            self.stats.expired += 1
        else:
            self.stats.evicted += 1
        mark_without_text(entry.span.value)
        self._send(entry.span, now, out)

    def _send(self, span: Item, now: float, out: list[dict[str, Any]]) -> None:
        rid = span.response_id
        self._remember(span.key, now)
        if rid is not None:
            if self._held.get(rid) == span.key:
                del self._held[rid]
            self._remember(rid, now)
        out.append(span.value)

    def _remember(self, key: bytes | str, now: float) -> None:
        self._done[key] = now + self.wait
        self._done.move_to_end(key)
        if len(self._done) > 2 * self.capacity:
            self._done.popitem(last=False)

    def _cap(self, now: float, out: list[dict[str, Any]]) -> None:
        while len(self._waiting) > self.capacity:
            _, entry = self._waiting.popitem(last=False)
            self._give_up(entry, now, out, expired=False)
