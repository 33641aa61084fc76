"""Stream labels from dotted field paths, with the `model` fallbacks and sanitization."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.records import Record, normalize
from exporter.records.labels import (
    MAX_LABEL_VALUE_LENGTH,
    MISSING,
    LabelSpec,
    StreamLabeler,
    lookup_path,
    sanitize_label_value,
)


def record(source: Any, requested: str | None = None, served: str | None = None) -> Record:
    return Record(
        shape="openai_chat",
        output_text="",
        requested_model=requested,
        served_model=served,
        source=source,
    )


def value(spec: str, source: Any, name: str = "route", **models: str | None) -> str:
    return LabelSpec.parse(name, spec).value(record(source, **models))


def test_simple_and_nested_paths() -> None:
    source = {"route": "/chat", "meta": {"tenant": {"id": "acme"}}}
    assert value("route", source) == "/chat"
    assert value("meta.tenant.id", source) == "acme"


def test_missing_path_is_unknown() -> None:
    assert value("meta.nope", {"meta": {}}) == MISSING == "unknown"


def test_pipe_fallbacks_take_the_first_scalar() -> None:
    source = {"b": {"c": "second"}, "d": "third"}
    assert value("a|b.c|d", source) == "second"
    assert value(" a | d ", source) == "third"
    assert value("a||b", source) == MISSING


def test_non_scalar_values_fall_through() -> None:
    source = {"a": {"x": 1}, "b": [1, 2], "c": None, "d": True, "e": "", "f": "ok"}
    assert value("a|b|c|d|e|f", source) == "ok"


def test_numbers_are_stringified() -> None:
    assert value("n", {"n": 3}) == "3"
    assert value("n", {"n": 2.5}) == "2.5"


def test_list_indexes() -> None:
    source = {"choices": [{"message": {"role": "assistant"}}, {"message": {"role": "tool"}}]}
    assert value("choices.0.message.role", source) == "assistant"
    assert value("choices.1.message.role", source) == "tool"
    assert value("choices.2.message.role", source) == MISSING
    assert value("choices.x.message.role", source) == MISSING
    assert value("choices.-1.message.role", source) == MISSING
    assert value("choices.²", source) == MISSING


def test_keys_containing_dots() -> None:
    source = {"attributes": {"gen_ai.request.model": "gpt-4o", "gen_ai": {"system": "nested"}}}
    assert value("attributes.gen_ai.request.model", source) == "gpt-4o"
    assert value("attributes.gen_ai.system", source) == "nested"


def test_longest_dotted_key_wins_but_shorter_split_is_tried_after() -> None:
    source = {"a.b": {"c": "long"}, "a": {"b": {"c": "short", "d": "only-short"}}}
    assert value("a.b.c", source) == "long"
    assert value("a.b.d", source) == "only-short"


def test_top_level_dotted_key() -> None:
    assert value("service.name", {"service.name": "bot"}) == "bot"


def test_otlp_key_value_attribute_lists() -> None:
    source = {
        "attributes": [
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "gen_ai.request.max_tokens", "value": {"intValue": "200"}},
        ],
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "support"}}]},
    }
    assert value("attributes.gen_ai.request.model", source) == "gpt-4o"
    assert value("attributes.gen_ai.request.max_tokens", source) == "200"
    assert value("resource.attributes.service.name", source) == "support"
    assert value("attributes.0.key", source) == "gen_ai.request.model"


def test_model_prefers_first_path_then_requested_then_other_paths_then_served() -> None:
    spec = "request.model|response.model"
    both = {"request": {"model": "gpt-4o"}, "response": {"model": "gpt-4o-2024-08-06"}}
    assert value(spec, both, "model", requested="alias") == "gpt-4o"
    # No request.model in the source: the adapter's requested model beats response.model.
    only_response = {"response": {"model": "gpt-4o-2024-08-06"}}
    assert value(spec, only_response, "model", requested="router-alias") == "router-alias"
    assert value(spec, only_response, "model") == "gpt-4o-2024-08-06"
    assert value(spec, {}, "model", served="claude-3-5-sonnet-20241022") == (
        "claude-3-5-sonnet-20241022"
    )
    assert value(spec, {}, "model") == MISSING


def test_model_fallback_only_applies_to_the_model_label() -> None:
    assert value("x", {}, "route", requested="gpt-4o", served="gpt-4o-x") == MISSING


def test_default_labels_on_real_shapes() -> None:
    labeler = StreamLabeler({"model": "request.model|response.model", "route": "route"})
    assert labeler.names == ("model", "route")
    chat = {
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}],
    }
    wrapped = {"route": "/chat", "request": {"model": "gpt-4o"}, "response": chat}
    assert labeler.key(normalize(wrapped)[0]) == ("gpt-4o", "/chat")
    assert labeler.key(normalize(chat)[0]) == ("gpt-4o-2024-08-06", MISSING)
    helicone = {"request": {"body": {"model": "gpt-4o-mini"}}, "response": {"body": chat}}
    assert labeler.key(normalize(helicone)[0]) == ("gpt-4o-mini", MISSING)
    otel = {
        "attributes": {
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.completion.0.content": "x",
        }
    }
    assert labeler.key(normalize(otel)[0]) == ("gpt-4o", MISSING)


def test_sanitize_strips_control_characters() -> None:
    assert sanitize_label_value("gpt-4o\n") == "gpt-4o"
    assert sanitize_label_value("a\tb\x00c\x7fd\x85e") == "a b c d e"
    assert sanitize_label_value("\x00\x01") == MISSING
    assert sanitize_label_value("   ") == MISSING
    assert sanitize_label_value("") == MISSING


def test_sanitize_keeps_unicode_and_replaces_lone_surrogates() -> None:
    assert sanitize_label_value("modèle-日本") == "modèle-日本"
    cleaned = sanitize_label_value("bad\ud800value")
    cleaned.encode("utf-8")
    assert cleaned == "bad?value"


def test_sanitize_caps_length() -> None:
    assert sanitize_label_value("x" * MAX_LABEL_VALUE_LENGTH) == "x" * MAX_LABEL_VALUE_LENGTH
    capped = sanitize_label_value("y" * 10_000)
    assert len(capped) == MAX_LABEL_VALUE_LENGTH == 128
    assert capped == "y" * 127 + "…"


def test_label_values_from_records_are_sanitized() -> None:
    source = {"route": "/chat\n" + "z" * 500}
    label = value("route", source)
    assert label.startswith("/chat z")
    assert len(label) == MAX_LABEL_VALUE_LENGTH
    assert value("m", {}, "model", requested="gpt-4o\x00") == "gpt-4o"


@pytest.mark.parametrize("spec", ["", "|", " | "])
def test_empty_spec(spec: str) -> None:
    assert LabelSpec.parse("model", spec).paths == ()
    assert value(spec, {"model": "x"}, "model", requested="gpt-4o") == "gpt-4o"
    assert value(spec, {"model": "x"}) == MISSING


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "a.b", "b", "0", "key", "value"]) | st.text(max_size=4),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@given(json_values, st.text(max_size=30), st.one_of(st.none(), st.text(max_size=200)))
def test_any_source_and_spec_gives_a_valid_label(
    source: Any, spec: str, requested: str | None
) -> None:
    label = LabelSpec.parse("model", spec).value(record(source, requested=requested))
    assert 0 < len(label) <= MAX_LABEL_VALUE_LENGTH
    label.encode("utf-8")
    assert label == label.strip()
    assert not any(ord(ch) < 0x20 for ch in label)


def test_lookup_path_returns_any_json_value() -> None:
    source = {"extra": {"embedding": [0.1, 0.2]}, "attributes": {"my.vector": [1, 2]}}
    assert lookup_path(source, ("extra", "embedding")) == [0.1, 0.2]
    assert lookup_path(source, ("attributes", "my", "vector")) == [1, 2]
    assert lookup_path(source, ("extra", "nope")) is None
    assert lookup_path(source, ()) is source


def test_lookup_path_through_lists_and_attribute_lists() -> None:
    nested = {"x.y": {"kvlistValue": {"values": [{"key": "z", "value": {"stringValue": "deep"}}]}}}
    source = {
        "a": [[{"b.c": "x"}], "scalar"],
        "attrs": [{"key": k, "value": v} for k, v in nested.items()] + [{"key": "x"}],
    }
    assert lookup_path(source, ("a", "0", "0", "b", "c")) == "x"
    assert lookup_path(source, ("a", "1")) == "scalar"
    assert lookup_path(source, ("a", "1", "b")) is None  # a scalar has no fields
    assert lookup_path(source, ("a", "2")) is None
    assert lookup_path(source, ("attrs", "x", "y", "z")) == "deep"
    assert lookup_path([{"k": 1}], ("0", "k")) == 1  # the source itself may be a list
    assert lookup_path("text", ("a",)) is None
