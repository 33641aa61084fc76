"""OpenTelemetry GenAI output in events and log records (the legacy `gen_ai.choice` forms), and
whole OTLP/JSON exports: one record per call, each with its own span and resource."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exporter.records import RejectedRecord, ToolCall, normalize
from exporter.records.labels import StreamLabeler
from tests.test_records_otel_genai import (
    END_NANOS,
    END_SECONDS,
    current_attributes,
    one,
    otlp_attributes,
    otlp_value,
    span,
)


def test_legacy_gen_ai_choice_span_event() -> None:
    event_attributes = {
        "gen_ai.system": "openai",
        "index": 0,
        "finish_reason": "stop",
        "message": json.dumps({"role": "assistant", "content": "From an event."}),
    }
    body = span(
        otlp_attributes({"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4"}),
        events=[
            {
                "timeUnixNano": END_NANOS,
                "name": "gen_ai.user.message",
                "attributes": otlp_attributes({"content": "hi"}),
            },
            {
                "timeUnixNano": END_NANOS,
                "name": "gen_ai.choice",
                "attributes": otlp_attributes(event_attributes),
            },
        ],
    )
    record = one(body)
    assert record.output_text == "From an event."
    assert record.finish_reason == "stop"
    assert record.requested_model == "gpt-4"


def test_legacy_gen_ai_content_completion_event() -> None:
    completion = json.dumps([{"role": "assistant", "content": "Old style."}])
    body = span(
        {"gen_ai.system": "openai", "gen_ai.response.finish_reasons": ["stop"]},
        events=[
            {
                "name": "gen_ai.content.completion",
                "attributes": {"gen_ai.completion": completion},
            }
        ],
    )
    record = one(body)
    assert record.output_text == "Old style."
    assert record.finish_reason == "stop"


def test_legacy_choice_log_record_otlp_json() -> None:
    log_record = {
        "timeUnixNano": END_NANOS,
        "observedTimeUnixNano": END_NANOS,
        "severityNumber": 9,
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "eventName": "gen_ai.choice",
        "attributes": otlp_attributes({"gen_ai.system": "openai", "event.name": "gen_ai.choice"}),
        "body": otlp_value(
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"},
                        }
                    ],
                },
            }
        ),
    }
    record = one(log_record)
    assert record.output_text == ""
    assert record.finish_reason == "tool_call"
    assert record.raw_finish_reason == "tool_calls"
    assert record.tool_calls == (ToolCall(name="get_time", arguments="{}"),)
    assert record.timestamp == END_SECONDS


def test_legacy_choice_log_record_plain_body() -> None:
    log_record = {
        "timestamp": "2024-09-22T10:15:30Z",
        "attributes": {"event.name": "gen_ai.choice", "gen_ai.system": "openai"},
        "body": {"index": 0, "finish_reason": "length", "message": {"content": "Truncat"}},
    }
    record = one(log_record)
    assert record.output_text == "Truncat"
    assert record.finish_reason == "length"
    assert record.timestamp == 1_727_000_130.0


def test_choice_log_record_detected_by_event_name_alone() -> None:
    log_record = {
        "eventName": "gen_ai.choice",
        "body": {"finish_reason": "stop", "message": {"content": "ok"}},
    }
    assert one(log_record).output_text == "ok"


def export(*spans: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": otlp_attributes(
                        {"service.name": "support-bot", "deployment.environment": "prod"}
                    )
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "opentelemetry.instrumentation.openai_v2"},
                        "spans": list(spans),
                    }
                ],
            }
        ]
    }


def http_span() -> dict[str, Any]:
    return span(
        otlp_attributes({"http.request.method": "POST", "url.path": "/v1/answer"}),
        name="POST /v1/answer",
        spanId="aaaaaaaaaaaaaaaa",
        kind=2,
    )


def test_resource_spans_export_skips_non_genai_span() -> None:
    genai = span(otlp_attributes(current_attributes()))
    records = normalize(export(http_span(), genai))
    assert len(records) == 1
    record = records[0]
    assert record.output_text == "Hello! How can I help?"
    assert record.requested_model == "gpt-4o"
    assert record.timestamp == END_SECONDS
    # Each record's source is its own span, with the resource beside it.
    assert record.source["spanId"] == "eee19b7ec3c1b174"
    labels = StreamLabeler(
        {
            "model": "attributes.gen_ai.request.model",
            "service": "resource.attributes.service.name",
            "operation": "attributes.gen_ai.operation.name",
        }
    )
    assert labels.key(record) == ("gpt-4o", "support-bot", "chat")


def test_resource_spans_export_with_two_genai_spans() -> None:
    first = span(otlp_attributes(current_attributes()))
    second = span(
        otlp_attributes(current_attributes(**{"gen_ai.request.model": "gpt-4o-mini"})),
        spanId="bbbbbbbbbbbbbbbb",
    )
    records = normalize(export(first, second))
    assert [r.requested_model for r in records] == ["gpt-4o", "gpt-4o-mini"]


def test_export_skips_agent_and_tool_spans_that_repeat_a_calls_output() -> None:
    chat = span(otlp_attributes(current_attributes(**{"gen_ai.operation.name": "text_completion"})))
    spans = [chat]
    for n, operation in enumerate(("invoke_agent", "execute_tool", "create_agent", "workflow")):
        repeated = current_attributes(**{"gen_ai.operation.name": operation})
        spans.append(span(otlp_attributes(repeated), spanId=f"{n:016x}", name=operation))
    unnamed = {k: v for k, v in current_attributes().items() if k != "gen_ai.operation.name"}
    spans.append(span(otlp_attributes(unnamed), spanId="cccccccccccccccc"))
    records = normalize(export(*spans))
    assert [r.source["spanId"] for r in records] == ["eee19b7ec3c1b174", "cccccccccccccccc"]
    # a lone span is read whatever its operation: the caller chose to send it
    assert one(spans[1]).output_text == "Hello! How can I help?"


def test_export_skips_operation_details_log_records() -> None:
    # util-genai's copy of a span's call, which the span in the traces export already counts
    attributes = current_attributes(**{"event.name": "gen_ai.client.inference.operation.details"})
    details = {"timeUnixNano": END_NANOS, "attributes": otlp_attributes(attributes)}
    named = {**details, "eventName": "gen_ai.client.inference.operation.details"}
    choice = {
        "timeUnixNano": END_NANOS,
        "eventName": "gen_ai.choice",
        "body": otlp_value({"index": 0, "finish_reason": "stop", "message": {"content": "Hi"}}),
    }
    payload = {"resourceLogs": [{"scopeLogs": [{"logRecords": [details, named, choice]}]}]}
    assert [r.output_text for r in normalize(payload)] == ["Hi"]
    with pytest.raises(RejectedRecord):
        normalize({"resourceLogs": [{"scopeLogs": [{"logRecords": [details, named]}]}]})


def test_export_without_genai_output_is_missing_output() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize(export(http_span()))
    assert caught.value.reason == "missing_output"


def test_single_resource_spans_object_per_line() -> None:
    line = export(span(otlp_attributes(current_attributes())))["resourceSpans"][0]
    record = one(line)
    assert record.output_text == "Hello! How can I help?"
    assert record.source["resource"]["attributes"][0]["key"] == "service.name"


def test_resource_logs_export() -> None:
    log_record = {
        "timeUnixNano": END_NANOS,
        "eventName": "gen_ai.choice",
        "attributes": otlp_attributes({"gen_ai.system": "openai"}),
        "body": otlp_value({"index": 0, "finish_reason": "stop", "message": {"content": "Hi"}}),
    }
    user_message = {
        "timeUnixNano": END_NANOS,
        "eventName": "gen_ai.user.message",
        "attributes": otlp_attributes({"gen_ai.system": "openai"}),
        "body": otlp_value({"content": "Hello"}),
    }
    payload = {
        "resourceLogs": [
            {
                "resource": {"attributes": otlp_attributes({"service.name": "bot"})},
                "scopeLogs": [{"scope": {}, "logRecords": [user_message, log_record]}],
            }
        ]
    }
    record = one(payload)
    assert record.output_text == "Hi"
    assert record.finish_reason == "stop"
