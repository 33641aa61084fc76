"""OpenInference LLM spans, mapped onto the OpenTelemetry GenAI attribute names.

OpenInference (Arize Phoenix's instrumentations) flattens everything into indexed attributes:
`llm.output_messages.{i}.message.content|role|tool_calls.{j}.tool_call.function.name|arguments`,
`llm.token_count.prompt|completion`, `llm.model_name` (the *served* model), `llm.finish_reason`,
and keeps the requested model only inside the `llm.invocation_parameters` JSON.

Why a mapping rather than a second adapter: `otel_genai` already turns `gen_ai.*` attributes
into Records (finish-reason spelling, refusals, tool calls, usage), so adding the `gen_ai.*` names
beside the originals gives one code path for every instrumentation, and the same `stream_labels`
paths (`attributes.gen_ai.request.model`) work whichever instrumentation produced the span.
Names a span already carries are never overwritten.
"""

from __future__ import annotations

from typing import Any

from exporter.records.fields import as_dict, as_int, as_list, as_str, load_json

KIND = "openinference.span.kind"
_OUTPUT = "llm.output_messages."
_TOOL_CALLS = "tool_calls."
_CONTENTS = "contents."
# OpenInference name -> GenAI name, copied as they are
_RENAMES = (
    ("llm.model_name", "gen_ai.response.model"),
    ("llm.token_count.prompt", "gen_ai.usage.input_tokens"),
    ("llm.token_count.completion", "gen_ai.usage.output_tokens"),
    ("llm.token_count.completion_details.reasoning", "gen_ai.usage.reasoning.output_tokens"),
    ("llm.provider", "gen_ai.provider.name"),
    ("llm.system", "gen_ai.system"),
)


def is_openinference(attrs: dict[str, Any]) -> bool:
    return KIND in attrs or "llm.model_name" in attrs


def _set(attrs: dict[str, Any], name: str, value: Any) -> None:
    if value is not None and name not in attrs:
        attrs[name] = value


def _grouped(attrs: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """`llm.output_messages.{i}.message.{field}` attributes grouped by message index."""
    grouped: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(_OUTPUT):
            continue
        index, _, name = key[len(_OUTPUT) :].partition(".")
        number = as_int(index)
        if number is not None and name.startswith("message."):
            grouped.setdefault(number, {})[name[len("message.") :]] = value
    return grouped


def _indexed(fields: dict[str, Any], prefix: str) -> dict[int, dict[str, Any]]:
    """`{prefix}{j}.{rest}` fields of one message grouped by j (tool calls, content parts)."""
    grouped: dict[int, dict[str, Any]] = {}
    for key, value in fields.items():
        if key.startswith(prefix):
            index, _, rest = key[len(prefix) :].partition(".")
            number = as_int(index)
            if number is not None and rest:
                grouped.setdefault(number, {})[rest] = value
    return grouped


def _message(fields: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style message (what otel_genai's `_message_output` reads) from one message's
    flattened fields."""
    content = fields.get("content")
    if content is None:  # multimodal form: contents.{k}.message_content.type|text
        parts = _indexed(fields, _CONTENTS)
        texts = [as_str(p.get("message_content.text")) for _, p in sorted(parts.items())]
        content = "".join(t for t in texts if t) if parts else None
    calls = [
        {
            "id": call.get("tool_call.id"),
            "function": {
                "name": call.get("tool_call.function.name"),
                "arguments": call.get("tool_call.function.arguments"),
            },
        }
        for _, call in sorted(_indexed(fields, _TOOL_CALLS).items())
    ]
    if "function_call_name" in fields:  # the legacy function-calling form
        calls.append(
            {
                "function": {
                    "name": fields.get("function_call_name"),
                    "arguments": fields.get("function_call_arguments_json"),
                }
            }
        )
    return {"role": fields.get("role"), "content": content, "tool_calls": calls}


def _response_choices(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """The choices of `output.value` when it is the raw OpenAI response JSON, else []."""
    output = attrs.get("output.value")
    if not isinstance(output, str) or not output.startswith("{"):
        return []
    return [as_dict(choice) for choice in as_list(as_dict(load_json(output)).get("choices"))]


def _output_messages(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    messages = [_message(fields) for _, fields in sorted(_grouped(attrs).items())]
    if not messages:
        # no flattened messages (older versions, hidden message attributes): the raw
        # response in output.value, when it is one
        return [as_dict(choice.get("message")) for choice in _response_choices(attrs)]
    if not any(m["content"] or m["tool_calls"] for m in messages):
        # OpenAI's `refusal` field is left out of llm.output_messages: it is only in
        # output.value, parsed here and only here (an empty answer is rare)
        for message, choice in zip(messages, _response_choices(attrs), strict=False):
            message["refusal"] = as_str(as_dict(choice.get("message")).get("refusal"))
    return messages


def map_to_genai(attrs: dict[str, Any]) -> None:
    """Add the GenAI names of what an OpenInference span carries (in place)."""
    for source, name in _RENAMES:
        _set(attrs, name, attrs.get(source))
    parameters = as_dict(load_json(attrs.get("llm.invocation_parameters")))
    _set(attrs, "gen_ai.request.model", as_str(parameters.get("model")))
    finish = as_str(attrs.get("llm.finish_reason"))
    if finish is not None:
        _set(attrs, "gen_ai.response.finish_reasons", [finish])
    if attrs.get(KIND) == "LLM":
        _set(attrs, "gen_ai.operation.name", "chat")
    if "gen_ai.output.messages" not in attrs:
        messages = _output_messages(attrs)
        if messages:
            attrs["gen_ai.output.messages"] = messages
