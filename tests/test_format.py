from __future__ import annotations

import json

import pytest

from exporter.records.record import Record, ToolCall
from exporter.signals.format import FormatChecker, build_rules, check


def rec(text: str, finish: str = "stop", calls: tuple[ToolCall, ...] = ()) -> Record:
    return Record(shape="openai_chat", output_text=text, finish_reason=finish, tool_calls=calls)


def rule(**spec):
    return build_rules([spec])[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', None),
        ("  [1, 2]\n", None),
        ("Here is the JSON: {\"a\": 1}", "not_json"),
        ('{"a": 1', "not_json"),
        ("42", "json_scalar"),
        ('"just a string"', "json_scalar"),
        ("", "empty"),
        ("   \n", "empty"),
        ('```json\n{"a": 1}\n```', "not_json"),
    ],
)
def test_json(text, expected):
    assert check(rule(expect="json"), rec(text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('```json\n{"a": 1}\n```', None),
        ('```\n[1]\n```', None),
        ('\n```json\n{"a": 1}\n```\n', None),
        ('Sure! ```json\n{"a": 1}\n```', "not_json"),
        ('```json\n{"a": 1}\n```\nHope this helps!', "not_json"),
    ],
)
def test_fenced_json_when_allowed(text, expected):
    assert check(rule(expect="json", allow_fenced=True), rec(text)) == expected


def test_truncation_is_invalid_even_if_it_parses():
    assert check(rule(expect="json"), rec('{"a": 1}', finish="length")) == "truncated"


def test_json_schema(tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}},
    }))
    r = rule(expect="json_schema", schema_file=str(schema))
    assert check(r, rec('{"name": "x"}')) is None
    assert check(r, rec('{"name": 3}')) == "schema"
    assert check(r, rec("{}")) == "schema"
    assert check(r, rec("nope")) == "not_json"


def test_regex_must_match_whole_reply():
    r = rule(expect="regex", pattern=r"(yes|no)")
    assert check(r, rec(" yes\n")) is None
    assert check(r, rec("yes, because")) == "regex"


def test_tool_arguments_checked_when_stream_expects_tools():
    r = rule(expect="json", tools=True)
    good = (ToolCall("lookup", '{"id": 1}'),)
    bad = (ToolCall("lookup", '{"id": 1'),)
    assert check(r, rec("", finish="tool_call", calls=good)) is None
    assert check(r, rec("", finish="tool_call", calls=bad)) == "tool_arguments"
    # without tools: a tool-call-only reply has no text for a JSON consumer
    assert check(rule(expect="json"), rec("", finish="tool_call", calls=good)) == "empty"


def test_first_matching_rule_wins_and_is_cached_per_stream():
    checker = FormatChecker(build_rules([
        {"match": {"route": "/extract"}, "expect": "json"},
        {"match_re": {"route": "/ex.*"}, "expect": "regex", "pattern": "ok"},
    ]))
    assert checker.rule_for(("m", "/extract"), {"model": "m", "route": "/extract"}).expect == "json"
    assert checker.rule_for(("m", "/exit"), {"model": "m", "route": "/exit"}).expect == "regex"
    assert checker.rule_for(("m", "/chat"), {"model": "m", "route": "/chat"}) is None
