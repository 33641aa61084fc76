"""The normalized record every later stage reads.

Adapters translate a provider's shape into this one type so that signals and
detectors never need to know which API produced a response.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The one finish-reason vocabulary: a truncation rate must mean the same thing
# whichever provider produced the record.
FINISH_REASONS = ("stop", "length", "content_filter", "tool_call", "refusal", "error", "other")

_FINISH_REASON_SPELLINGS = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "completed": "stop",
    "complete": "stop",
    "eos": "stop",
    "finish_reason_stop": "stop",
    "length": "length",
    "max_tokens": "length",
    "max_output_tokens": "length",
    "model_context_window_exceeded": "length",
    "model_length": "length",
    "content_filter": "content_filter",
    "safety": "content_filter",
    "recitation": "content_filter",
    "blocklist": "content_filter",
    "prohibited_content": "content_filter",
    "spii": "content_filter",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "tool_calls": "tool_call",
    "tool_call": "tool_call",
    "tool_use": "tool_call",
    "function_call": "tool_call",
    "refusal": "refusal",
    "error": "error",
    "failed": "error",
    "failure": "error",
}


def normalize_finish_reason(raw: object) -> str:
    """Map a provider's spelling onto FINISH_REASONS; anything unknown is `other`."""
    if not isinstance(raw, str) or not raw:
        return "other"
    exact = _FINISH_REASON_SPELLINGS.get(raw)  # usually spelled exactly; spares strip and lower
    return exact or _FINISH_REASON_SPELLINGS.get(raw.strip().lower(), "other")


@dataclass(slots=True, unsafe_hash=True)  # not frozen, for the same reason as Record below
class ToolCall:
    """A tool/function call the model emitted. `arguments` is the raw JSON text."""

    name: str
    arguments: str | None


# Not frozen: a frozen dataclass's __init__ sets each field through
# object.__setattr__, which made building a Record a quarter of the cost of
# normalizing one. Nothing assigns to a record after an adapter built it
# (adapters derive variants with dataclasses.replace); unsafe_hash keeps the
# hash a frozen dataclass would have.
@dataclass(slots=True, unsafe_hash=True)
class Record:
    """One normalized LLM response; treat it as immutable.

    `source` keeps the original JSON object so stream labels can be read from
    any field the user names, not just the ones adapters understand.
    """

    shape: str
    output_text: str
    finish_reason: str = "other"
    raw_finish_reason: str | None = None
    structured_refusal: bool = False
    refusal_text: str | None = None
    requested_model: str | None = None
    served_model: str | None = None
    system_fingerprint: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    choice_count: int = 1
    embedding: tuple[float, ...] | None = None
    timestamp: float | None = None
    source: Any = field(default=None, repr=False, compare=False)
