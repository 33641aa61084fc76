"""The per-stream metric families of one StreamTable, written as `StreamChunks`.

Family order, names, help texts, label sets and values are those the exporter has
always exported (DESIGN.md's metric contract); `exporter.exposition` explains why
they are written as text here rather than built as MetricFamily objects.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client.openmetrics.exposition import escape_label_name

from exporter.metrics.drift import (
    DETECTOR_ERRORS,
    DRIFT_FAMILIES,
    SIGNAL,
    SIGNAL_STAT,
    render_drift,
)
from exporter.metrics.exposition import (
    Dialect,
    FamilySpec,
    StreamChunks,
    escape_value,
    family_names,
    label_segments,
    merge,
    number,
)
from exporter.records.record import FINISH_REASONS
from exporter.signals.format import INVALID_REASONS
from exporter.signals.totals import Histogram
from exporter.streams.table import StreamState, StreamTable

HISTOGRAMS = (
    ("output_tokens", FamilySpec(
        "llm_output_tokens", "histogram",
        "Visible output tokens per record (provider usage minus reasoning, else counted "
        "with the tokenizer).")),
    ("input_tokens", FamilySpec(
        "llm_input_tokens", "histogram", "Input tokens per record, where reported.")),
    ("reasoning_tokens", FamilySpec(
        "llm_reasoning_tokens", "histogram",
        "Hidden reasoning tokens per record, where reported separately.")),
)
REFUSAL_KINDS = ("structured", "phrase", "custom")
STREAM_FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec("llm_records", "counter", "LLM records accepted, per stream."),
    FamilySpec("llm_finish_reasons", "counter",
               "Records by normalized finish reason (stop, length, content_filter, tool_call, "
               "refusal, error, other)."),
    FamilySpec("llm_served_model_records", "counter",
               "Records by the model version the provider reports having served."),
    FamilySpec("llm_system_fingerprint_records", "counter",
               "Records by the provider's system_fingerprint, where reported."),
    FamilySpec("llm_last_record_timestamp_seconds", "gauge",
               "Time of the last record of the stream (record timestamp, else arrival time)."),
    *(spec for _, spec in HISTOGRAMS),
    FamilySpec("llm_output_token_counts", "counter",
               "Records by how output tokens were obtained: provider usage, or the tokenizer "
               "(with the encoding used)."),
    FamilySpec("llm_refusals", "counter", "Records judged refusals."),
    FamilySpec("llm_refusals_by_kind", "counter",
               "Refusals by how they were recognized: structured, phrase, custom."),
    FamilySpec("llm_format_checked", "counter",
               "Records checked against the stream's format expectation (refusals excluded)."),
    FamilySpec("llm_format_invalid", "counter", "Checked records that failed, by reason."),
    FamilySpec("llm_embeddings", "counter",
               "Records embedded, by source of the vector: user (supplied) or builtin."),
    *DRIFT_FAMILIES,
)
# families summed over streams: (spec, label names)
SUMMED_FAMILIES = ((DETECTOR_ERRORS, SIGNAL),)
_DRIFT_AT = len(STREAM_FAMILIES) - len(DRIFT_FAMILIES)
# every combination of varying label names a stream family uses
SHAPES = ((), ("finish_reason",), ("served_model",), ("system_fingerprint",), ("le",),
          ("encoding", "method"), ("kind",), ("reason",), ("source",), SIGNAL, SIGNAL_STAT)
_EXTRA_NAMES = tuple(sorted({name for shape in SHAPES for name in shape}))
Segments = dict[tuple[str, ...], tuple[str, ...]]


class StreamRenderer:
    """Writes the stream families of one StreamTable. Holds each stream's label text cut
    into segments (built on first sight of the stream; labels never change), so a scrape
    formats numbers and little else. Kept per spelling of the label names: escapings
    that spell them alike (underscores and allow-utf-8 for legacy names) share it."""

    def __init__(self, table: StreamTable) -> None:
        self.table = table
        self._segments: dict[tuple[str, ...], dict[tuple[str, ...], Segments]] = {}

    def render(self, dialect: Dialect) -> StreamChunks:
        names = [family_names(spec, dialect).samples for spec in STREAM_FAMILIES]
        out: list[list[str]] = [[] for _ in STREAM_FAMILIES]
        errors: Counter[tuple[str, ...]] = Counter()
        label_names = self.table.label_names
        spelling = tuple(escape_label_name(name, dialect.escaping)
                         for name in (*label_names, *_EXTRA_NAMES))
        cached = self._segments.setdefault(spelling, {})
        streams = list(self.table)
        head, drift = out[:_DRIFT_AT], out[_DRIFT_AT:]
        head_names, drift_names = names[:_DRIFT_AT], names[_DRIFT_AT:]
        for stream in streams:
            if stream.detectors is not None:
                stream.detectors.settle()  # calibrations finished off-thread count now
            segments = cached.get(stream.labels)
            if segments is None:
                pairs = tuple(zip(label_names, stream.labels, strict=True))
                segments = {shape: label_segments(pairs, shape, dialect.escaping)
                            for shape in SHAPES}
                cached[stream.labels] = segments
            _render_stream(stream, segments, head_names, head)
            render_drift(stream, segments, drift_names, drift, errors)
        if len(cached) > len(streams):  # streams went away: forget their text
            self._segments[spelling] = {s.labels: cached[s.labels] for s in streams}
        return StreamChunks(dialect, ["".join(lines).encode() for lines in out],
                            {DETECTOR_ERRORS.name: errors})


def merge_streams(
    sources: list[StreamChunks], dialect: Dialect, names: frozenset[str] | None = None
) -> bytes:
    """The stream part of a scrape from any number of sources owning disjoint streams."""
    return merge(sources, STREAM_FAMILIES, SUMMED_FAMILIES, dialect, names)


def _render_stream(
    stream: StreamState, segments: Segments, names: list[tuple[str, ...]], out: list[list[str]]
) -> None:
    """Append one stream's samples of the non-drift families, as the exporter always
    exported them: finish reasons and invalid reasons from 0 so rate() sees the first
    one, histograms only once observed, invalid reasons only where a format is checked."""
    (records, finish, served, fingerprints, last, out_tokens, in_tokens, reasoning, methods,
     refusals, by_kind, checked, invalid, embedded) = out
    (plain,) = segments[()]
    records.append(f"{names[0][0]}{plain}{number(stream.records)}\n")
    a, b = segments[("finish_reason",)]
    counts = stream.finish_reasons
    finish.extend([f"{names[1][0]}{a}{reason}{b}{number(counts[reason])}\n"
                   for reason in FINISH_REASONS])
    a, b = segments[("served_model",)]
    served.extend([f"{names[2][0]}{a}{escape_value(model)}{b}{number(count)}\n"
                   for model, count in stream.served_models.items()])
    a, b = segments[("system_fingerprint",)]
    fingerprints.extend([f"{names[3][0]}{a}{escape_value(print_)}{b}{number(count)}\n"
                         for print_, count in stream.system_fingerprints.items()])
    if stream.last_record_time is not None:
        last.append(f"{names[4][0]}{plain}{number(stream.last_record_time)}\n")
    totals = stream.signals
    le = segments[("le",)]
    for (attr, _), lines, spelled in zip(HISTOGRAMS, (out_tokens, in_tokens, reasoning),
                                         names[5:8], strict=True):
        histogram: Histogram = getattr(totals, attr)
        if histogram.observations:
            _histogram(histogram, spelled, le, plain, lines)
    a, b, c = segments[("encoding", "method")]
    methods.extend([f"{names[8][0]}{a}{escape_value(encoding)}{b}{escape_value(method)}{c}"
                    f"{number(count)}\n" for (method, encoding), count
                    in totals.token_methods.items()])
    refusals.append(f"{names[9][0]}{plain}{number(sum(totals.refusals.values()))}\n")
    a, b = segments[("kind",)]
    by_kind.extend([f"{names[10][0]}{a}{kind}{b}{number(totals.refusals[kind])}\n"
                    for kind in REFUSAL_KINDS])
    if totals.format_checked:
        checked.append(f"{names[11][0]}{plain}{number(totals.format_checked)}\n")
        a, b = segments[("reason",)]
        invalid.extend([f"{names[12][0]}{a}{reason}{b}{number(totals.format_invalid[reason])}\n"
                        for reason in INVALID_REASONS])
    a, b = segments[("source",)]
    embedded.extend([f"{names[13][0]}{a}{escape_value(source)}{b}{number(count)}\n"
                     for source, count in totals.embeddings.items()])


def _histogram(
    histogram: Histogram, spelled: tuple[str, ...], le: tuple[str, str], plain: str,
    lines: list[str],
) -> None:
    bucket, count, total = spelled
    a, b = le
    running = 0
    for bound, observed in zip(_le_values(histogram.bounds), histogram.counts, strict=True):
        running += observed
        # `number` inlined: buckets are a third of all samples
        value = f"{running}.0" if type(running) is int and running < 1_000_000 else number(running)
        lines.append(f"{bucket}{a}{bound}{b}{value}\n")
    lines.append(f"{count}{plain}{number(running)}\n")
    lines.append(f"{total}{plain}{number(histogram.total)}\n")


_LE_VALUES: dict[tuple[float, ...], tuple[str, ...]] = {}


def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The `le` label values of a histogram with these bounds, as `Histogram.cumulative()`
    spells them (asked once per set of bounds)."""
    values = _LE_VALUES.get(bounds)
    if values is None:
        empty = Histogram(bounds=bounds, counts=[0] * (len(bounds) + 1))
        values = _LE_VALUES[bounds] = tuple(escape_value(le) for le, _ in empty.cumulative())
    return values
