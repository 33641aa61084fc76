"""OpenAI Chat Completions bodies (and Azure OpenAI / compatible servers) normalize exactly."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from exporter.records import Record, RejectedRecord, ToolCall, normalize

CREATED = 1_727_000_000


def chat_response(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-A1b2C3d4E5f6",
        "object": "chat.completion",
        "created": CREATED,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_5f20662549",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Paris is the capital of France.",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 24,
            "completion_tokens": 8,
            "total_tokens": 32,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    }
    body.update(overrides)
    return body


def envelope(response: dict[str, Any], model: str = "gpt-4o") -> dict[str, Any]:
    return {
        "timestamp": "2024-09-22T10:15:30.250Z",
        "route": "/chat",
        "request": {
            "model": model,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0.2,
        },
        "response": response,
    }


def one(obj: Any, fmt: str = "auto") -> Record:
    records = normalize(obj, fmt)
    assert len(records) == 1
    return records[0]


def test_plain_answer_in_envelope() -> None:
    record = one(envelope(chat_response()))
    assert record.shape == "openai_chat"
    assert record.output_text == "Paris is the capital of France."
    assert record.finish_reason == "stop"
    assert record.raw_finish_reason == "stop"
    assert record.structured_refusal is False
    assert record.refusal_text is None
    assert record.requested_model == "gpt-4o"
    assert record.served_model == "gpt-4o-2024-08-06"
    assert record.system_fingerprint == "fp_5f20662549"
    assert record.input_tokens == 24
    assert record.output_tokens == 8
    assert record.reasoning_tokens == 0
    assert record.tool_calls == ()
    assert record.choice_count == 1
    assert record.timestamp == pytest.approx(1_727_000_130.25)


def test_bare_response_uses_created_and_has_no_requested_model() -> None:
    record = one(chat_response())
    assert record.requested_model is None
    assert record.served_model == "gpt-4o-2024-08-06"
    assert record.timestamp == CREATED
    assert record.source["id"] == "chatcmpl-A1b2C3d4E5f6"


def test_envelope_keeps_original_object_as_source() -> None:
    obj = envelope(chat_response())
    record = one(obj)
    assert record.source is obj


def test_structured_refusal_beside_null_content() -> None:
    refusal = "I'm sorry, I can't help with that request."
    body = chat_response()
    body["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": refusal}
    record = one(envelope(body))
    assert record.output_text == ""
    assert record.structured_refusal is True
    assert record.refusal_text == refusal
    # OpenAI says "stop" for a refusal; the normalized vocabulary says what happened.
    assert record.raw_finish_reason == "stop"
    assert record.finish_reason == "refusal"


def test_truncated_by_max_tokens() -> None:
    body = chat_response()
    body["choices"][0]["finish_reason"] = "length"
    body["choices"][0]["message"]["content"] = '{"name": "Ada", "langu'
    body["usage"]["completion_tokens"] = 10
    record = one(envelope(body))
    assert record.finish_reason == "length"
    assert record.raw_finish_reason == "length"
    assert record.output_text == '{"name": "Ada", "langu'
    assert record.output_tokens == 10
    assert record.structured_refusal is False


def test_tool_calls_keep_raw_argument_json() -> None:
    body = chat_response()
    body["choices"][0]["finish_reason"] = "tool_calls"
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_9pw1qnYScqvGrCH58HWCvFH6",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location":"Paris, FR"}'},
            },
            {
                "id": "call_Xq3UR7aGx1Tm0KLKcPEBP6YN",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
            },
        ],
    }
    record = one(envelope(body))
    assert record.output_text == ""
    assert record.finish_reason == "tool_call"
    assert record.raw_finish_reason == "tool_calls"
    assert record.tool_calls == (
        ToolCall(name="get_weather", arguments='{"location":"Paris, FR"}'),
        ToolCall(name="get_time", arguments='{"tz": "Europe/Paris"}'),
    )


def test_legacy_function_call() -> None:
    body = chat_response()
    body["choices"][0]["finish_reason"] = "function_call"
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "lookup_order", "arguments": '{\n  "order_id": "A-17"\n}'},
    }
    record = one(envelope(body, model="gpt-3.5-turbo-0613"))
    assert record.finish_reason == "tool_call"
    assert record.raw_finish_reason == "function_call"
    assert record.tool_calls == (
        ToolCall(name="lookup_order", arguments='{\n  "order_id": "A-17"\n}'),
    )


def test_custom_tool_call_uses_free_form_input() -> None:
    body = chat_response()
    body["choices"][0]["finish_reason"] = "tool_calls"
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}}
        ],
    }
    assert one(body).tool_calls == (ToolCall(name="sql", arguments="SELECT 1"),)


def test_tool_call_entries_that_are_not_objects_are_skipped() -> None:
    body = chat_response()
    body["choices"][0]["message"]["tool_calls"] = [
        None,
        "x",
        {"type": "function", "function": {"name": "f", "arguments": {"not": "a string"}}},
    ]
    assert one(body).tool_calls == (ToolCall(name="f", arguments=None),)


def test_n_greater_than_one_describes_lowest_index() -> None:
    body = chat_response()
    first = body["choices"][0]
    second = copy.deepcopy(first)
    second["index"] = 1
    second["message"]["content"] = "The capital of France is Paris."
    third = copy.deepcopy(first)
    third["index"] = 2
    third["finish_reason"] = "length"
    third["message"]["content"] = "France's capital"
    body["choices"] = [third, second, first]  # order in the list is not the index order
    record = one(envelope(body))
    assert record.choice_count == 3
    assert record.output_text == "Paris is the capital of France."
    assert record.finish_reason == "stop"


def test_reasoning_model_usage() -> None:
    body = chat_response(model="o3-mini-2025-01-31", system_fingerprint="fp_ef58bd3122")
    body["usage"] = {
        "prompt_tokens": 31,
        "completion_tokens": 1450,
        "total_tokens": 1481,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 1408},
    }
    record = one(envelope(body, model="o3-mini"))
    assert record.requested_model == "o3-mini"
    assert record.served_model == "o3-mini-2025-01-31"
    assert record.output_tokens == 1450
    assert record.reasoning_tokens == 1408


def test_content_as_list_of_text_parts() -> None:
    body = chat_response()
    body["choices"][0]["message"]["content"] = [
        {"type": "text", "text": "Hello, "},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
        {"type": "text", "text": "world"},
    ]
    assert one(body).output_text == "Hello, world"


AZURE_FILTER_OK = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


def azure_response(choice: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-9zAzure",
        "object": "chat.completion",
        "created": CREATED,
        "model": "gpt-4o-2024-05-13",
        "system_fingerprint": "fp_67802d9a6d",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": AZURE_FILTER_OK}],
        "choices": [choice],
        "usage": {"prompt_tokens": 18, "completion_tokens": 0, "total_tokens": 18},
    }


def test_azure_content_filter_choice_without_message() -> None:
    filtered = dict(AZURE_FILTER_OK, violence={"filtered": True, "severity": "medium"})
    body = azure_response(
        {"index": 0, "finish_reason": "content_filter", "content_filter_results": filtered}
    )
    obj = envelope(body, model="my-gpt4o-deployment")
    record = one(obj)
    assert record.shape == "openai_chat"
    assert record.output_text == ""
    assert record.finish_reason == "content_filter"
    assert record.raw_finish_reason == "content_filter"
    assert record.structured_refusal is True
    assert record.refusal_text is None
    assert record.tool_calls == ()
    assert record.requested_model == "my-gpt4o-deployment"
    assert record.served_model == "gpt-4o-2024-05-13"
    assert record.input_tokens == 18
    assert record.output_tokens == 0


def test_azure_normal_choice_with_filter_annotations() -> None:
    body = azure_response(
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Sure, here it is."},
            "content_filter_results": AZURE_FILTER_OK,
        }
    )
    record = one(body)
    assert record.output_text == "Sure, here it is."
    assert record.finish_reason == "stop"
    assert record.structured_refusal is False


def test_helicone_style_nested_bodies() -> None:
    obj = {
        "request": {
            "id": "req-1",
            "path": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        },
        "response": {"status": 200, "body": chat_response(model="gpt-4o-mini-2024-07-18")},
    }
    record = one(obj)
    assert record.requested_model == "gpt-4o-mini"
    assert record.served_model == "gpt-4o-mini-2024-07-18"
    assert record.output_text == "Paris is the capital of France."


def test_response_logged_as_json_text() -> None:
    import json

    obj = envelope(chat_response())
    obj["response"] = json.dumps(obj["response"])
    record = one(obj)
    assert record.output_text == "Paris is the capital of France."
    assert record.requested_model == "gpt-4o"


def test_legacy_text_completion_shape() -> None:
    body = {
        "id": "cmpl-7FW",
        "object": "text_completion",
        "created": CREATED,
        "model": "gpt-3.5-turbo-instruct",
        "choices": [{"text": " account?", "index": 0, "logprobs": None, "finish_reason": None}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11},
    }
    record = one(body)
    assert record.output_text == " account?"
    assert record.finish_reason == "other"
    assert record.raw_finish_reason is None


def test_compatible_server_without_object_field() -> None:
    body = chat_response()
    del body["object"]
    del body["system_fingerprint"]
    body["model"] = "meta-llama/Llama-3.1-8B-Instruct"
    record = one(envelope(body, model="meta-llama/Llama-3.1-8B-Instruct"))
    assert record.shape == "openai_chat"
    assert record.system_fingerprint is None


def test_token_counts_written_as_strings_or_floats() -> None:
    body = chat_response()
    body["usage"] = {"prompt_tokens": "24", "completion_tokens": 8.0}
    record = one(body)
    assert record.input_tokens == 24
    assert record.output_tokens == 8
    assert record.reasoning_tokens is None


def test_nonsense_token_counts_are_absent_not_zero() -> None:
    body = chat_response()
    body["usage"] = {"prompt_tokens": -3, "completion_tokens": "lots", "total_tokens": True}
    record = one(body)
    assert record.input_tokens is None
    assert record.output_tokens is None


def test_unknown_finish_reason_is_other_and_kept_raw() -> None:
    body = chat_response()
    body["choices"][0]["finish_reason"] = "eos_token"
    record = one(body)
    assert record.finish_reason == "other"
    assert record.raw_finish_reason == "eos_token"


def test_streaming_chunk_reads_delta() -> None:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}],
    }
    assert one(chunk).output_text == "Hel"


def test_empty_choices_is_missing_output() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize(chat_response(choices=[]))
    assert caught.value.reason == "missing_output"


def test_choices_that_are_not_objects_is_missing_output() -> None:
    with pytest.raises(RejectedRecord) as caught:
        normalize(chat_response(choices=[None, 3]), fmt="openai_chat")
    assert caught.value.reason == "missing_output"


def test_forced_format_accepts_the_shape() -> None:
    assert one(envelope(chat_response()), fmt="openai_chat").shape == "openai_chat"
