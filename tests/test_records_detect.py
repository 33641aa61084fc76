"""Shape detection, forced formats, rejections, and robustness on arbitrary JSON."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.records import FINISH_REASONS, FORMATS, Record, RejectedRecord, normalize
from exporter.records.labels import MAX_LABEL_VALUE_LENGTH, StreamLabeler
from exporter.records.record import normalize_finish_reason
from tests.record_samples import (
    ANTHROPIC,
    CHAT,
    LITELLM,
    OTEL,
    SAMPLES,
    json_keys,
    json_values,
    wrapped,
)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_auto_detects_each_shape(name: str) -> None:
    obj, shape = SAMPLES[name]
    records = normalize(copy.deepcopy(obj))
    assert [r.shape for r in records] == [shape]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_forcing_the_right_format_gives_the_same_records(name: str) -> None:
    obj, shape = SAMPLES[name]
    assert normalize(copy.deepcopy(obj), fmt=shape) == normalize(copy.deepcopy(obj))


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "auto"])
def test_forcing_a_wrong_format_rejects_or_reads_the_wrapped_response(name: str, fmt: str) -> None:
    obj, shape = SAMPLES[name]
    try:
        records = normalize(copy.deepcopy(obj), fmt=fmt)
    except RejectedRecord as rejected:
        assert rejected.reason in ("unknown_format", "missing_output")
        assert fmt != shape
    else:
        assert all(isinstance(r, Record) for r in records)


def test_wrong_forced_shapes_are_unknown_format() -> None:
    for obj, fmt in [
        (ANTHROPIC, "openai_chat"),
        (CHAT, "anthropic"),
        (CHAT, "openai_responses"),
        (CHAT, "otel_genai"),
        (CHAT, "langfuse"),
        (CHAT, "litellm"),
        (OTEL, "openai_chat"),
    ]:
        with pytest.raises(RejectedRecord) as caught:
            normalize(copy.deepcopy(obj), fmt=fmt)
        assert caught.value.reason == "unknown_format", (fmt, caught.value.message)


def test_forced_response_format_reads_inside_litellm_payload() -> None:
    assert normalize(copy.deepcopy(LITELLM), fmt="openai_chat")[0].shape == "openai_chat"


def test_unknown_format_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        normalize(copy.deepcopy(CHAT), fmt="gemini")


@pytest.mark.parametrize("value", [[], [CHAT], "a string", json.dumps(CHAT), 42, 4.2, True, None])
def test_non_objects_are_unknown_format(value: Any) -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize(value)
    assert caught.value.reason == "unknown_format"
    assert "JSON object" in caught.value.message


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"hello": "world"},
        {"message": "user logged in", "level": "info"},
        {"choices": []},
        {"choices": [1, 2]},
        {"output": []},
        {"content": "text"},
        {"type": "GENERATION"},
        {"type": "message", "content": "not blocks"},
        {"timestamp": 1, "route": "/x", "request": {"model": "m"}, "response": {"ok": True}},
        {"response": {"data": [{"embedding": [0.1]}], "object": "list"}},
        {"object": "embedding", "data": []},
        {"error": {"message": "Rate limit", "type": "rate_limit_error"}},
    ],
)
def test_unrelated_objects_are_unknown_format(obj: dict[str, Any]) -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize(obj)
    assert caught.value.reason == "unknown_format"


def test_unknown_format_message_names_the_keys() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize({"zeta": 1, "alpha": 2})
    assert "alpha, zeta" in caught.value.message


def test_litellm_wins_over_its_wrapped_response() -> None:
    assert normalize(copy.deepcopy(LITELLM))[0].requested_model == "default"


def test_wrapped_response_wins_over_stray_gen_ai_keys_in_the_wrapper() -> None:
    obj = wrapped(copy.deepcopy(CHAT))
    obj["attributes"] = {"gen_ai.system": "openai"}
    assert normalize(obj)[0].shape == "openai_chat"


def test_envelope_timestamp_forms() -> None:
    for stamp, expected in [
        ("2024-09-22T10:15:30Z", 1_727_000_130.0),
        ("2024-09-22T10:15:30", 1_727_000_130.0),  # no offset: read as UTC
        ("2024-09-22T12:15:30+02:00", 1_727_000_130.0),
        (1_727_000_130, 1_727_000_130.0),
        (1_727_000_130_000, 1_727_000_130.0),
        (1_727_000_130_000_000_000, 1_727_000_130.0),
        ("1727000130000", 1_727_000_130.0),
    ]:
        obj = wrapped(copy.deepcopy(CHAT))
        obj["timestamp"] = stamp
        assert normalize(obj)[0].timestamp == pytest.approx(expected), stamp


def test_unparseable_timestamp_falls_back_to_created() -> None:
    obj = wrapped(copy.deepcopy(CHAT))
    obj["timestamp"] = "yesterday"
    assert normalize(obj)[0].timestamp == 1_727_000_000


def _set(obj: dict[str, Any], path: str, new: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    *parents, last = path.split("/")
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = new
    return obj


@pytest.mark.parametrize(
    ("sample", "path", "hostile"),
    [
        ("chat_bare", "choices/0/index", "²"),  # isdigit() but not int()-able
        ("chat_bare", "usage/prompt_tokens", "9" * 5000),  # beyond int() digit limit
        ("chat_bare", "created", 10**400),  # float() overflow
        ("chat_wrapped", "timestamp", "9" * 400),
        ("chat_wrapped", "timestamp", "0001-01-01T00:00:00+14:00"),  # before the epoch
        ("chat_wrapped", "timestamp", -5),
        ("anthropic_bare", "content/2/input", {"n": -(2**64)}),  # orjson refuses it
        ("otel_span", "endTimeUnixNano", "1" * 30),
        ("otel_span", "attributes/1/value/intValue", "-3"),
        ("litellm", "endTime", float("inf")),
        ("langfuse", "usageDetails", {"input": "²", "output": 2**70, 5: 1}),
    ],
)
def test_hostile_values_in_typed_fields(sample: str, path: str, hostile: Any) -> None:
    obj = _set(SAMPLES[sample][0], path, hostile)
    records = normalize(obj)
    assert records
    for record in records:
        assert record.timestamp is None or record.timestamp > 0


def test_lone_surrogate_in_a_label_value_is_encodable() -> None:
    # Python's json module decodes "\\ud800" to a lone surrogate that UTF-8 cannot encode.
    obj = wrapped(copy.deepcopy(CHAT), model=json.loads('"gpt\\ud800-4o"'))
    assert LABELER.key(normalize(obj)[0])[0] == "gpt?-4o"


# --- robustness: arbitrary JSON never raises anything but RejectedRecord -----------------

LABELER = StreamLabeler(
    {
        "model": "request.model|response.model",
        "route": "route",
        "deep": "choices.0.message.content|attributes.gen_ai.request.model|resource.attributes",
    }
)


def check_outcome(value: Any, fmt: str = "auto") -> None:
    try:
        records = normalize(value, fmt)
    except RejectedRecord as rejected:
        assert rejected.reason in ("unknown_format", "missing_output")
        assert isinstance(rejected.message, str)
        return
    assert records
    for record in records:
        assert isinstance(record, Record)
        assert isinstance(record.output_text, str)
        assert record.finish_reason in FINISH_REASONS
        assert record.choice_count >= 1
        for count in (record.input_tokens, record.output_tokens, record.reasoning_tokens):
            assert count is None or (isinstance(count, int) and count >= 0)
        for call in record.tool_calls:
            assert isinstance(call.name, str)
            assert call.arguments is None or isinstance(call.arguments, str)
        assert record.timestamp is None or record.timestamp > 0
        for label in LABELER.key(record):
            assert 0 < len(label) <= MAX_LABEL_VALUE_LENGTH
            label.encode("utf-8")  # every label value must survive the exposition format


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(json_values, st.sampled_from(FORMATS))
def test_arbitrary_json_only_ever_raises_rejected_record(value: Any, fmt: str) -> None:
    check_outcome(value, fmt)


@FUZZ
@given(st.dictionaries(json_keys, json_values, max_size=8))
def test_arbitrary_objects_only_ever_raise_rejected_record(value: dict[str, Any]) -> None:
    check_outcome(value)
    check_outcome({"request": {"model": "m"}, "response": value})


def _containers(node: Any, found: list[tuple[Any, Any]]) -> None:
    """Every (container, key-or-index) slot inside `node`."""
    if isinstance(node, dict):
        for key, child in node.items():
            found.append((node, key))
            _containers(child, found)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found.append((node, index))
            _containers(child, found)


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_mutated_valid_bodies_only_ever_raise_rejected_record(
    name: str, data: st.DataObject
) -> None:
    body = copy.deepcopy(SAMPLES[name][0])
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        slots: list[tuple[Any, Any]] = []
        _containers(body, slots)
        if not slots:
            break
        container, key = data.draw(st.sampled_from(slots))
        action = data.draw(st.sampled_from(["replace", "delete", "stringify"]))
        if action == "delete":
            del container[key]
        elif action == "stringify":
            container[key] = json.dumps(container[key])
        else:
            container[key] = data.draw(json_values)
    check_outcome(body)
    check_outcome(body, SAMPLES[name][1])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("stop", "stop"),
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("completed", "stop"),
        ("STOP", "stop"),
        (" length ", "length"),
        ("max_tokens", "length"),
        ("MAX_TOKENS", "length"),
        ("max_output_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("content_filter", "content_filter"),
        ("content_filtered", "content_filter"),
        ("SAFETY", "content_filter"),
        ("tool_calls", "tool_call"),
        ("tool_use", "tool_call"),
        ("function_call", "tool_call"),
        ("refusal", "refusal"),
        ("failed", "error"),
        ("pause_turn", "other"),
        ("", "other"),
        (None, "other"),
        (3, "other"),
    ],
)
def test_finish_reason_vocabulary(raw: Any, expected: str) -> None:
    assert normalize_finish_reason(raw) == expected
    assert expected in FINISH_REASONS
