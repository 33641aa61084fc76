"""OpenInference span attributes mapped onto the GenAI names read as otel_genai records (the
forms the captured fixture in tests/fixtures/otlp does not show; tests/test_otlp_decode.py
reads the fixture)."""

from __future__ import annotations

import json
from typing import Any

from exporter.records import Record, normalize
from exporter.records.openinference import map_to_genai


def openinference_record(attrs: dict[str, Any]) -> Record:
    attrs = {"openinference.span.kind": "LLM", **attrs}
    map_to_genai(attrs)
    [record] = normalize({"name": "ChatCompletion", "attributes": attrs, "events": []})
    return record


def test_openinference_content_parts_and_names_already_set() -> None:
    record = openinference_record(
        {
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.contents.1.message_content.text": " world",
            "llm.output_messages.0.message.contents.0.message_content.text": "hello",
            "llm.output_messages.0.message.contents.0.message_content.type": "text",
            "llm.model_name": "served",
            "gen_ai.response.model": "kept",
            "llm.invocation_parameters": '{"model": "asked", "temperature": 0}',
            "llm.token_count.completion": 2,
        }
    )
    assert (record.output_text, record.served_model) == ("hello world", "kept")
    assert (record.requested_model, record.output_tokens) == ("asked", 2)


def test_openinference_without_message_attributes_reads_the_raw_response() -> None:
    response = {
        "model": "served",
        "choices": [
            {"finish_reason": "stop", "message": {"role": "assistant", "content": "from json"}}
        ],
    }
    record = openinference_record(
        {"output.value": json.dumps(response), "llm.finish_reason": "stop"}
    )
    assert (record.output_text, record.finish_reason) == ("from json", "stop")
