"""Compute every per-record signal in one place, so the pipeline calls one thing.

The four signals of DESIGN.md: output tokens (provider usage first, else the
tokenizer), refusal, format validity (only where a rule selects the stream),
and an embedding (a user-supplied vector, else the built-in one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exporter.records.labels import lookup_path
from exporter.records.record import Record
from exporter.signals.embedding import TextEmbedder, vector_from_record
from exporter.signals.format import FormatChecker, build_rules, check
from exporter.signals.refusal import RefusalDetector
from exporter.signals.registry import SignalSettings
from exporter.signals.tokens import TokenCounter

USAGE = "usage"
TOKENIZER = "tokenizer"


@dataclass(slots=True)
class Measurements:
    output_tokens: int
    token_method: str  # usage | tokenizer
    encoding: str  # the tiktoken encoding that counted, or "none" for usage
    input_tokens: int | None
    reasoning_tokens: int | None
    refusal: str | None  # structured | phrase | custom, or None
    format_checked: bool
    format_invalid: str | None  # reason, or None when valid or unchecked
    embedding: np.ndarray | None
    embedding_source: str | None  # user | builtin
    # the text the built-in embedding is still to be computed from (see `embed_pending`)
    pending_text: str | None = None


def visible_output_tokens(record: Record) -> int | None:
    """Provider-reported output tokens without hidden reasoning.

    OpenAI (Chat and Responses) and OTel count reasoning tokens inside the
    output total; a reasoning-effort change would otherwise read as the
    answers getting longer. Reasoning is tracked apart.
    """
    if record.output_tokens is None:
        return None
    reasoning = record.reasoning_tokens or 0
    return record.output_tokens - reasoning if reasoning <= record.output_tokens else 0


class SignalMeasurer:
    def __init__(self, settings: SignalSettings) -> None:
        self.settings = settings
        self.tokens = TokenCounter(settings.encodings_dir)
        self.refusals = RefusalDetector(
            list(settings.refusal_extra_patterns), list(settings.refusal_exclude_patterns)
        )
        self.formats = FormatChecker(build_rules(list(settings.format_rules)))
        self.embedder = (
            TextEmbedder(settings.embedding_dimension) if settings.embedding_enabled else None
        )

    def _output_tokens(self, record: Record) -> tuple[int, str, str]:
        usage = visible_output_tokens(record)
        if usage is not None:
            return usage, USAGE, "none"
        text = record.output_text
        if record.tool_calls:
            text += "".join(call.name + (call.arguments or "") for call in record.tool_calls)
        count, encoding = self.tokens.count(text, record.served_model or record.requested_model)
        return count, TOKENIZER, encoding

    def check_supplied_embedding(self, record: Record) -> None:
        """ValueError if the record's user-supplied vector is unusable (see `measure`)."""
        if self.embedder is not None and self.settings.embedding_path is not None:
            vector_from_record(lookup_path(record.source, self.settings.embedding_path))

    def _embedding(self, record: Record, defer: bool) -> tuple[np.ndarray | None, str | None]:
        if self.embedder is None:
            return None, None
        if self.settings.embedding_path is not None:
            # One source per stream: a record without its vector gets none rather than a
            # built-in one of another dimension and meaning.
            supplied = lookup_path(record.source, self.settings.embedding_path)
            if supplied is None:
                return None, None
            return vector_from_record(supplied), "user"
        if defer:
            return None, "builtin"
        return self.embedder.embed(record.output_text), "builtin"

    def measure(
        self,
        record: Record,
        key: tuple[str, ...],
        names: tuple[str, ...],
        defer_embedding: bool = False,
    ) -> Measurements:
        """All signals of one record (`key`: its stream-label values, `names`: the label names).
        May raise ValueError for a bad user-supplied embedding. `defer_embedding` leaves the
        built-in embedding to `embed_pending`, which embeds many records' texts at once."""
        tokens, method, encoding = self._output_tokens(record)
        refusal = self.refusals.classify(record)
        rule = self.formats.rule_for_key(key, names)
        checked = rule is not None and refusal is None
        invalid = check(rule, record) if checked and rule is not None else None
        vector, source = self._embedding(record, defer_embedding)
        # Positional: with eleven fields, keyword arguments cost as much as a signal.
        return Measurements(
            tokens,  # output_tokens
            method,  # token_method
            encoding,  # encoding
            record.input_tokens,  # input_tokens
            record.reasoning_tokens,  # reasoning_tokens
            refusal,  # refusal
            checked,  # format_checked
            invalid,  # format_invalid
            vector,  # embedding
            source,  # embedding_source
            record.output_text if vector is None and source else None,  # pending_text
        )

    def embed_pending(self, batch: list[Measurements]) -> None:
        """Fill in the built-in embeddings that `measure` deferred, in shared numpy passes."""
        pending = [m for m in batch if m.pending_text is not None]
        if not pending or self.embedder is None:
            return
        vectors = self.embedder.embed_many(m.pending_text or "" for m in pending)
        for measurements, vector in zip(pending, vectors, strict=True):
            measurements.embedding, measurements.pending_text = vector, None
