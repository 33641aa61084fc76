"""SpanJoin: chat spans without text meet the log records that carry it, within a bounded wait
and memory, in either order; a second span of one response is dropped."""

from __future__ import annotations

from typing import Any

from exporter.inputs.otlp_decode import Item, Kind
from exporter.inputs.otlp_join import SpanJoin
from exporter.records import Record, normalize


def records_of(values: list[dict[str, Any]]) -> list[Record]:
    return [record for value in values for record in normalize(value)]


def key(n: int) -> bytes:
    return bytes(15) + bytes([n]) + bytes(7) + bytes([n])


def span(n: int, text: str | None = None, rid: str | None = None) -> Item:
    attrs: dict[str, Any] = {"gen_ai.request.model": "m", "gen_ai.usage.output_tokens": n}
    if text is not None:
        attrs["gen_ai.output.messages"] = [{"role": "assistant", "content": text}]
    if rid is not None:
        attrs["gen_ai.response.id"] = rid
    value = {"name": f"chat {n}", "attributes": attrs, "events": []}
    return Item(Kind.CHAT, value, key(n), rid, needs_join=text is None)


def choice(n: int, text: str, finish: str = "stop") -> Item:
    body = {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}
    value = {
        "timeUnixNano": 0,
        "observedTimeUnixNano": 5,
        "eventName": "gen_ai.choice",
        "attributes": {"gen_ai.system": "openai"},
        "body": body,
    }
    return Item(Kind.CHOICE, value, key(n))


def texts(values: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r.output_text, r.finish_reason) for r in records_of(values)]


def test_span_then_its_choice_event() -> None:
    join = SpanJoin(wait=2.0)
    assert join.add([span(1)], now=0.0) == []
    assert len(join) == 1
    joined = join.add([choice(1, "hi", "length"), choice(9, "other span's")], now=1.0)
    assert texts(joined) == [("hi", "length")]
    assert join.stats.joined == 1 and len(join) == 1  # span 9's record waits
    assert join.add([choice(1, "late")], now=1.5) == []
    assert join.stats.events_dropped == 1


def test_choice_events_before_their_span_and_several_choices() -> None:
    join = SpanJoin(wait=2.0)
    assert join.add([choice(1, "a"), choice(1, "b")], now=0.0) == []
    [value] = join.add([span(1)], now=1.0)
    [record] = records_of([value])
    assert (record.output_text, record.choice_count) == ("a", 2)


def test_expiry_passes_spans_on_without_text_and_drops_lone_events() -> None:
    join = SpanJoin(wait=2.0)
    join.add([span(1)], now=0.0)
    join.add([choice(2, "orphan")], now=1.0)
    assert join.expire(now=1.9) == []
    [value] = join.expire(now=2.0)
    [record] = records_of([value])
    assert (record.output_text, record.output_tokens, record.finish_reason) == ("", 1, "other")
    assert join.expire(now=3.0) == []
    assert (join.stats.expired, join.stats.events_expired, len(join)) == (1, 1, 0)


def test_capacity_pushes_the_oldest_out_and_counts_it() -> None:
    join = SpanJoin(wait=60.0, capacity=2)
    assert join.add([span(1), choice(2, "x")], now=0.0) == []
    [evicted] = join.add([span(3)], now=1.0)
    assert evicted["name"] == "chat 1" and texts([evicted]) == [("", "other")]
    assert join.add([span(4)], now=2.0) == []  # pushes out span 2's waiting record
    assert (join.stats.evicted, join.stats.events_evicted, len(join)) == (1, 1, 2)
    assert texts(join.add([choice(3, "three")], now=3.0)) == [("three", "stop")]


def test_spans_with_text_pass_at_once_and_duplicates_are_dropped() -> None:
    join = SpanJoin(wait=5.0)
    assert texts(join.add([span(1, "ready")], now=0.0)) == [("ready", "other")]
    assert join.add([span(1, "ready")], now=1.0) == []  # a retried export
    # a span without text, then another span of the same response with it (other trace)
    assert join.add([span(2, rid="msg_1")], now=1.0) == []
    assert texts(join.add([span(3, "from 3", rid="msg_1")], now=1.0)) == [("from 3", "other")]
    assert join.add([span(4, "again", rid="msg_1")], now=2.0) == []
    assert join.stats.duplicates == 3 and len(join) == 0
    assert join.expire(now=100.0) == []


def test_records_without_span_ids_stand_alone() -> None:
    join = SpanJoin()
    lone = choice(0, "alone")
    lone.key = bytes(24)
    assert texts(join.add([lone], now=0.0)) == [("alone", "stop")]
    assert join.stats.unjoinable == 1


def test_an_operation_details_record_lends_its_output_to_a_span_without_text() -> None:
    # util-genai's event_only mode: the span has no content, its details log record has
    messages = [{"role": "assistant", "parts": [{"type": "text", "content": "hi"}]}]
    attrs = {"gen_ai.output.messages": messages, "gen_ai.response.finish_reasons": ["length"]}
    details = Item(Kind.DETAILS, {"attributes": attrs, "body": None}, key(1))
    join = SpanJoin()
    assert join.add([span(1)], now=0.0) == []
    assert texts(join.add([details], now=0.5)) == [("hi", "length")]
