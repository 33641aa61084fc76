"""Langfuse generation observations (exported JSON, `type: "GENERATION"`).

`output` is the assistant message, a provider response, or a plain string;
usage lives in `usageDetails` (current) or `usage` (older exports).
"""

from __future__ import annotations

from typing import Any

from exporter.records.envelope import Envelope
from exporter.records.errors import RejectedRecord
from exporter.records.fields import as_dict, as_str, as_timestamp, first_int, text_of
from exporter.records.record import Record, normalize_finish_reason

NAME = "langfuse"


def looks_like(obj: dict[str, Any]) -> bool:
    return obj.get("type") == "GENERATION" and "output" in obj


def normalize(envelope: Envelope) -> list[Record]:
    obs = envelope.source
    output = obs.get("output")
    if output is None:
        raise RejectedRecord("missing_output", "Langfuse generation has no output")
    usage = as_dict(obs.get("usageDetails")) or as_dict(obs.get("usage"))
    metadata = as_dict(obs.get("metadata"))
    raw_finish = as_str(metadata.get("finish_reason"))
    text = output if isinstance(output, str) else text_of(as_dict(output).get("content"))
    refusal = as_str(as_dict(output).get("refusal"))
    return [
        Record(
            shape=NAME,
            output_text=text,
            finish_reason=normalize_finish_reason(raw_finish or "stop"),
            raw_finish_reason=raw_finish,
            structured_refusal=refusal is not None,
            refusal_text=refusal,
            requested_model=as_str(obs.get("model")),
            served_model=as_str(obs.get("model")),
            input_tokens=first_int(usage, "input", "promptTokens", "prompt_tokens"),
            output_tokens=first_int(usage, "output", "completionTokens", "completion_tokens"),
            timestamp=as_timestamp(obs.get("endTime")) or envelope.timestamp,
            source=obs,
        )
    ]
