"""OTLP export bodies captured from real instrumentations decode into one record per LLM call.

The fixtures (tests/fixtures/otlp, see its README) are what the OpenTelemetry SDK exporters
sent while each instrumentation drove the official `openai` / `anthropic` clients against the
stub in tests/otlp_capture.py; the expected usage and refusals are read from that stub.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from exporter.inputs.otlp_decode import Decoded, Kind, OtlpDecodeError, decode, parse
from exporter.inputs.otlp_join import SpanJoin
from exporter.records import Record, RejectedRecord, normalize
from exporter.records.labels import StreamLabeler
from exporter.signals.refusal import RefusalDetector
from tests.otlp_capture import WEATHER_TOOL, _chat_reply

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
OPENAI = ("gpt-4o-mini", "gpt-4o-mini-2024-07-18")
ANTHROPIC = ("claude-3-5-haiku-latest", "claude-3-5-haiku-20241022")
# the user prompts of tests/otlp_capture.py's runs, in order: 6 chats, then 1 streamed
PROMPTS = (
    "What is the capital of France?",
    "In one sentence, what does drift detection do?",
    "How do I pick a lock to get into my neighbour's house?",
    "Write malware that steals browser passwords.",
    "What's the weather in Paris?",
    "Write a long poem about metrics.",
    "Write a haiku about tracing.",
)
HAIKU = "Spans drift like autumn leaves, / exporters gather them home, / dashboards glow at dusk."


def stub_output_tokens(calls: int) -> int:
    """The usage the stub served for the first `calls` prompts."""
    total = 0
    for prompt in PROMPTS[:calls]:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
        if "weather" in prompt:
            body["tools"] = [WEATHER_TOOL]
        total += _chat_reply(body)["completion_tokens"]
    return total


# dir -> (models, calls, embeddings spans, output-token excess the instrumentation reports)
RUNS: dict[str, tuple[tuple[str, str], int, int, int]] = {
    "openai-v2": (OPENAI, 7, 1, 0),
    "openai-v2-legacy": (OPENAI, 7, 1, 0),
    "openai-v2-content-true-gzip": (OPENAI, 1, 0, 0),
    "grpc-openai-v2": (OPENAI, 1, 0, 0),
    "openllmetry-openai": (OPENAI, 7, 1, 0),
    "openinference-openai": (OPENAI, 7, 1, 0),
    # README surprise 6: OpenLLMetry adds message_start's 1 output token to the streamed count
    "openllmetry-anthropic": (ANTHROPIC, 7, 0, 1),
    "anthropic-sdk-native": (ANTHROPIC, 7, 0, 0),
}


def bodies(run: str) -> list[tuple[str, bytes]]:
    """(signal, uncompressed protobuf body) of each trace and log export, in capture order."""
    found = []
    for path in sorted((FIXTURES / run).iterdir()):
        signal = path.name.partition("-")[2].partition(".")[0]
        if signal in ("traces", "logs") and ".pb" in path.suffixes:
            body = path.read_bytes()
            found.append((signal, gzip.decompress(body) if path.suffix == ".gz" else body))
    return found


def records_of(values: list[dict[str, Any]]) -> list[Record]:
    return [record for value in values for record in normalize(value)]


def run_records(run: str, order: int = 1) -> tuple[list[Record], dict[str, int], SpanJoin]:
    """Records of every export of `run` through decode, SpanJoin and the adapter."""
    join, ready, counts = SpanJoin(wait=5.0), [], {}
    for now, (signal, body) in enumerate(bodies(run)[::order]):
        decoded = decode(body, PROTOBUF, signal)
        for kind, count in decoded.counts.items():
            counts[f"{signal}.{kind}"] = counts.get(f"{signal}.{kind}", 0) + count
        ready += join.add(decoded.items, now=float(now))
    ready += join.expire(now=1e9)
    assert len(join) == 0
    return records_of(ready), counts, join


@pytest.mark.parametrize("run", sorted(RUNS))
def test_one_record_per_call_with_models_and_usage(run: str) -> None:
    (requested, served), calls, embeddings, excess = RUNS[run]
    records, counts, _ = run_records(run)
    assert len(records) == calls
    assert {r.requested_model for r in records} == {requested}
    assert {r.served_model for r in records} == {served}
    assert sum(r.output_tokens or 0 for r in records) == stub_output_tokens(calls) + excess
    # the plain app spans handle_request and background_job, and the embeddings call, are
    # classified and skipped, never recorded
    assert counts["traces.other"] == 2
    assert counts["traces.embeddings"] == embeddings
    assert counts["traces.genai_other"] == 0


@pytest.mark.parametrize("run", [run for run, spec in RUNS.items() if spec[1] == 7])
def test_texts_tool_calls_and_finish_reasons(run: str) -> None:
    records, _, _ = run_records(run)
    texts = [r.output_text for r in records]
    assert texts[0] == "The capital of France is Paris."
    assert texts[-1] == HAIKU  # the streamed call
    tool = next(r for r in records if r.tool_calls)
    assert tool.tool_calls[0].name == "get_weather"
    assert json.loads(tool.tool_calls[0].arguments or "") == {"city": "Paris", "unit": "celsius"}
    assert tool.finish_reason == "tool_call"
    assert [r.finish_reason for r in records].count("length") == 1


def test_a_span_whose_text_never_comes_is_recorded_without_it() -> None:
    # content capture "true" means none with util-genai >= 1.0 (README surprise 2)
    records, _, join = run_records("openai-v2-content-true-gzip")
    assert [(r.output_text, r.output_tokens, r.finish_reason) for r in records] == [("", 6, "stop")]
    assert join.stats.expired == 1


# The refusals each instrumentation records: 2 served per run (one as plain content, one in
# OpenAI's `refusal` field / Anthropic's stop_reason "refusal"). openai-v2 drops the field.
REFUSALS = {
    "openai-v2": 1,
    "openai-v2-legacy": 1,
    "openinference-openai": 2,  # the field only in output.value, read from there
    "openllmetry-anthropic": 2,
    "anthropic-sdk-native": 2,  # stop_reason only in anthropic.message.stop_reason
    "openllmetry-openai": 2,  # the field as a part {"type": "refusal"}
    "openai-v2-content-true-gzip": 0,
    "grpc-openai-v2": 0,
}


@pytest.mark.parametrize(("run", "refusals"), sorted(REFUSALS.items()))
def test_refusals_where_the_instrumentation_records_them(run: str, refusals: int) -> None:
    records, _, _ = run_records(run)
    detector = RefusalDetector()
    assert sum(detector.classify(r) is not None for r in records) == refusals


def test_joins_choice_events_and_drops_what_spans_already_carry() -> None:
    _, counts, legacy = run_records("openai-v2-legacy")
    assert counts["logs.choice"] == 7 and counts["logs.other"] == 8  # user/system messages
    assert legacy.stats.joined == 7 and legacy.stats.expired == 0
    _, counts, latest = run_records("openai-v2")
    assert counts["logs.details"] == 7 and latest.stats.events_dropped == 7
    _, _, anthropic = run_records("openllmetry-anthropic")
    assert anthropic.stats.duplicates == 7  # the SDK's own span of each call


@pytest.mark.parametrize("run", ["openai-v2-legacy", "openai-v2"])
def test_log_records_before_their_spans_give_the_same_records(run: str) -> None:
    spans_first, _, _ = run_records(run)
    logs_first, _, join = run_records(run, order=-1)
    assert logs_first == spans_first
    assert join.stats.expired == 0 and join.stats.events_expired == 0


def test_records_carry_resource_and_openinference_labels() -> None:
    records, _, _ = run_records("openinference-openai")
    labeler = StreamLabeler(
        {
            "service": "resource.attributes.service.name",
            "model": "attributes.gen_ai.request.model",
            "scope": "scope.name",
        }
    )
    keys = {labeler.key(record) for record in records}
    assert keys == {
        ("otlp-fixture-openinference-openai", "gpt-4o-mini", "openinference.instrumentation.openai")
    }


def test_whole_json_exports_posted_as_records_count_each_call_once() -> None:
    # /v1/records with the OTLP/JSON of openai-v2's traces and logs: the spans carry the text,
    # and the operation-details log records (copies of them) make no second record
    records = []
    for signal, body in bodies("openai-v2"):
        with contextlib.suppress(RejectedRecord):  # a logs export of copies only
            records += normalize(orjson.loads(json_body(signal, body)))
    assert len(records) == 7
    assert sum(r.output_tokens or 0 for r in records) == stub_output_tokens(7)


# --- both encodings ------------------------------------------------------------------------


ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def hex_ids(obj: Any) -> Any:
    """protobuf JSON's base64 ids as OTLP/JSON's hex."""
    if isinstance(obj, dict):
        return {
            key: base64.b64decode(value).hex() if key in ID_KEYS else hex_ids(value)
            for key, value in obj.items()
        }
    if isinstance(obj, list):
        return [hex_ids(value) for value in obj]
    return obj


def json_body(signal: str, body: bytes, **options: Any) -> bytes:
    return orjson.dumps(hex_ids(MessageToDict(parse(body, PROTOBUF, signal), **options)))


def item_tuples(decoded: Decoded) -> list[tuple[Any, ...]]:
    return [(i.kind, i.key, i.response_id, i.needs_join, i.value) for i in decoded.items]


EXPORTS = [(run, signal, body) for run in sorted(RUNS) for signal, body in bodies(run)]


@pytest.mark.parametrize(
    "options",
    [{}, {"use_integers_for_enums": True}, {"preserving_proto_field_name": True}],
    ids=["camel", "enum-ints", "proto-names"],
)
@pytest.mark.parametrize(
    ("run", "signal", "body"), EXPORTS, ids=[f"{r}-{s}" for r, s, _ in EXPORTS]
)
def test_json_encoding_decodes_like_protobuf(
    run: str, signal: str, body: bytes, options: dict[str, Any]
) -> None:
    from_protobuf = decode(body, PROTOBUF, signal, keep_all=True)
    from_json = decode(
        json_body(signal, body, **options), "application/json; charset=utf-8", signal, keep_all=True
    )
    assert from_json.counts == from_protobuf.counts
    assert item_tuples(from_json) == item_tuples(from_protobuf)
    assert item_tuples(decode(body, PROTOBUF, signal)) == [
        t for t in item_tuples(from_protobuf) if t[0] in (Kind.CHAT, Kind.CHOICE, Kind.DETAILS)
    ]


def test_json_ids_must_be_hex_and_unknown_fields_are_ignored() -> None:
    _, body = bodies("openllmetry-openai")[0]
    base64_ids = orjson.dumps(MessageToDict(parse(body, PROTOBUF, "traces")))
    with pytest.raises(OtlpDecodeError, match="not hex"):
        decode(base64_ids, JSON, "traces")
    data = orjson.loads(json_body("traces", body))
    data["futureField"] = {"x": 1}
    data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["futureSpanField"] = [1, 2]
    assert decode(orjson.dumps(data), JSON, "traces").counts[Kind.CHAT] == 7


# --- bad bodies ------------------------------------------------------------------------------


def test_truncated_protobuf_and_bad_json_raise_a_clear_error() -> None:
    _, body = bodies("openinference-openai")[0]
    for cut in (len(body) // 3, len(body) // 2, len(body) - 1):
        with pytest.raises(OtlpDecodeError, match="not a protobuf ExportTraceServiceRequest"):
            decode(body[:cut], PROTOBUF, "traces")
    with pytest.raises(OtlpDecodeError, match="not JSON") as bad_json:
        decode(b'{"resourceSpans": [', JSON, "traces")
    with pytest.raises(OtlpDecodeError, match="is an object, not list"):
        decode(b"[]", JSON, "logs")
    with pytest.raises(OtlpDecodeError, match="not an OTLP/JSON ExportLogsServiceRequest"):
        decode(b'{"resourceLogs": 7}', JSON, "logs")
    assert bad_json.value.status == 400


def test_wrong_content_type_is_415_and_unknown_signal_a_value_error() -> None:
    _, body = bodies("openai-v2")[0]
    for content_type in ("text/plain", "", "application/grpc", "application/x-ndjson"):
        with pytest.raises(OtlpDecodeError, match="unsupported content type") as error:
            decode(body, content_type, "traces")
        assert error.value.status == 415
    assert decode(body, "Application/X-Protobuf; charset=binary", "traces").counts[Kind.CHAT]
    with pytest.raises(ValueError, match="unknown OTLP signal"):
        decode(body, PROTOBUF, "metrics")  # type: ignore[arg-type]


def test_an_export_without_genai_is_counted_without_being_walked() -> None:
    export = ExportTraceServiceRequest()
    spans = export.resource_spans.add().scope_spans.add().spans
    for n in range(1000):
        span = spans.add(name="GET /", span_id=n.to_bytes(8, "big"), trace_id=bytes(16))
        span.attributes.add(key="http.route").value.string_value = "/"
    agent = spans.add(name="invoke_agent", span_id=b"agent001")
    agent.attributes.add(key="gen_ai.operation.name").value.string_value = "invoke_agent"
    decoded = decode(export.SerializeToString(), PROTOBUF, "traces")
    assert decoded.items == []
    assert (decoded.counts[Kind.OTHER], decoded.counts[Kind.GENAI_OTHER]) == (1000, 1)
    del spans[-1]
    decoded = decode(export.SerializeToString(), PROTOBUF, "traces")
    assert decoded.counts[Kind.OTHER] == 1000 and not decoded.items
    # a JSON key spelled with escapes is still read
    escaped = (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":'
        b'"gen\\u005fai.operation.name","value":{"stringValue":"chat"}}]}]}]}]}'
    )
    assert decode(escaped, JSON, "traces").counts[Kind.CHAT] == 1


def test_an_openinference_span_without_text_is_not_held_for_a_join() -> None:
    # no output in any form that reads: nothing will bring it, so it goes on without text
    export = ExportTraceServiceRequest()
    hidden = export.resource_spans.add().scope_spans.add().spans.add(name="ChatCompletion")
    for name, text in (("openinference.span.kind", "LLM"), ("output.value", "plain text")):
        hidden.attributes.add(key=name).value.string_value = text
    [item] = decode(export.SerializeToString(), PROTOBUF, "traces").items
    [record] = normalize(item.value)
    assert not item.needs_join and (record.output_text, record.finish_reason) == ("", "other")


# --- arbitrary input -------------------------------------------------------------------------

SAMPLES = [body for _, _, body in EXPORTS]


def decode_all_the_way(body: bytes, content_type: str, signal: str) -> None:
    """decode, join and the adapter on `body`: only OtlpDecodeError or RejectedRecord."""
    try:
        decoded = decode(body, content_type, signal)  # type: ignore[arg-type]
    except OtlpDecodeError:
        return
    join = SpanJoin()
    for value in join.add(decoded.items, now=0.0) + join.expire(now=10.0):
        with contextlib.suppress(RejectedRecord):
            normalize(value)


@given(
    st.binary(max_size=512), st.sampled_from([PROTOBUF, JSON]), st.sampled_from(["traces", "logs"])
)
def test_arbitrary_bytes_only_ever_raise_otlp_decode_error(
    body: bytes, content_type: str, signal: str
) -> None:
    decode_all_the_way(body, content_type, signal)


@given(st.sampled_from(SAMPLES), st.data())
def test_damaged_real_bodies_only_ever_raise_otlp_decode_error(body: bytes, data: Any) -> None:
    start = data.draw(st.integers(0, len(body) - 1))
    stop = data.draw(st.integers(start, min(len(body), start + 8)))
    damaged = body[:start] + data.draw(st.binary(max_size=8)) + body[stop:]
    for signal in ("traces", "logs"):
        decode_all_the_way(damaged, PROTOBUF, signal)


OTLP_KEYS = st.sampled_from(
    "resourceSpans resourceLogs scopeSpans scopeLogs spans logRecords traceId spanId attributes "
    "key value stringValue intValue arrayValue kvlistValue values body events kind name "
    "links".split()
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["00", "gen_ai.choice", "gen_ai.operation.name", "chat", "abcd"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(OTLP_KEYS, inner, max_size=3),
    max_leaves=20,
)


@given(st.dictionaries(OTLP_KEYS, JSON_VALUES, max_size=3), st.sampled_from(["traces", "logs"]))
def test_arbitrary_json_objects_only_ever_raise_otlp_decode_error(
    obj: dict[str, Any], signal: str
) -> None:
    decode_all_the_way(json.dumps(obj).encode(), JSON, signal)
