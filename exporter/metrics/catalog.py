"""The per-stream metric families, declared once.

Each `Family` gives a family's name, type, help text, the labels it adds beside the
stream labels, and a value function that reads its samples from one stream (or, with
`per="signal"`, from one of the stream's detectors). This table is the only place a
per-stream metric is declared; from it come:

- the text writer of `/metrics` (exporter.metrics.families), in the table's order;
- `RESERVED_LABELS`, the names a stream label may not take (exporter.config);
- docs/metrics.md (`python -m exporter.metrics.reference > docs/metrics.md`).

To add a per-stream metric, add a Family here with its value function, then
regenerate docs/metrics.md and the golden files (`python -m tests.exposition_helpers`).

It imports nothing heavy, so that config validation and the docs can read it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from exporter.records.record import FINISH_REASONS

if TYPE_CHECKING:
    from exporter.detectors.base import Detector
    from exporter.signals.totals import Histogram
    from exporter.streams.table import StreamState

# what a value function returns, by the number of labels the family adds:
#   none: the value, or None for no sample (histograms: the Histogram, or None);
#   one: (label value, value) pairs; two: ((label value, label value), value) pairs,
#   label values in the order of `labels`.
# With per="signal" it takes (detector, detector.summary()) and the `signal` label,
# first in `labels`, is filled in by the writer; the rest follow the rules above.
ValueFunction = Callable[..., Any]
TYPE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
REFUSAL_KINDS = ("structured", "phrase", "custom")


@dataclass(frozen=True)
class Family:
    """One per-stream metric family. `name` as prometheus_client's MetricFamily takes it
    (counters without `_total`); `labels` beside the stream labels; `summed`: exported
    summed over streams, labelled by `labels` only (written after the other families)."""

    name: str
    type: Literal["counter", "gauge", "histogram"]
    help: str
    value: ValueFunction
    labels: tuple[str, ...] = ()
    per: Literal["stream", "signal"] = "stream"
    summed: bool = False

    @property
    def sample_names(self) -> tuple[str, ...]:
        return tuple(self.name + suffix for suffix in TYPE_SUFFIXES[self.type])


def _observed(histogram: Histogram) -> Histogram | None:
    return histogram if histogram.observations else None


def _format_checked(stream: StreamState) -> int | None:
    return stream.signals.format_checked or None


def _format_invalid(stream: StreamState) -> Iterable[tuple[str, int]]:
    """Every reason from 0 once a format is checked, so rate() sees the first failure."""
    totals = stream.signals
    if not totals.format_checked:
        return ()
    return [(reason, totals.format_invalid[reason]) for reason in _invalid_reasons()]


@cache
def _invalid_reasons() -> tuple[str, ...]:
    """Imported on first use: the format checker loads jsonschema (this module stays light)."""
    from exporter.signals.format import INVALID_REASONS

    return INVALID_REASONS


def _detector_errors(stream: StreamState) -> Iterable[tuple[str, int]]:
    return () if stream.detectors is None else stream.detectors.errors.items()


def _summary(part: str) -> ValueFunction:
    def stats(_: Detector, summary: dict[str, dict[str, float]]) -> Iterable[tuple[str, float]]:
        return summary.get(part, {}).items()

    return stats


FAMILIES: tuple[Family, ...] = (
    Family("llm_records", "counter", "LLM records accepted, per stream.",
           lambda s: s.records),
    # every reason from 0, so rate() sees the first truncation of a stream
    Family("llm_finish_reasons", "counter",
           "Records by normalized finish reason (stop, length, content_filter, tool_call, "
           "refusal, error, other).",
           lambda s: [(reason, s.finish_reasons[reason]) for reason in FINISH_REASONS],
           ("finish_reason",)),
    Family("llm_served_model_records", "counter",
           "Records by the model version the provider reports having served.",
           lambda s: s.served_models.items(), ("served_model",)),
    Family("llm_system_fingerprint_records", "counter",
           "Records by the provider's system_fingerprint, where reported.",
           lambda s: s.system_fingerprints.items(), ("system_fingerprint",)),
    Family("llm_last_record_timestamp_seconds", "gauge",
           "Time of the last record of the stream (record timestamp, else arrival time).",
           lambda s: s.last_record_time),
    Family("llm_output_tokens", "histogram",
           "Visible output tokens per record (provider usage minus reasoning, else counted "
           "with the tokenizer).",
           lambda s: _observed(s.signals.output_tokens)),
    Family("llm_input_tokens", "histogram", "Input tokens per record, where reported.",
           lambda s: _observed(s.signals.input_tokens)),
    Family("llm_reasoning_tokens", "histogram",
           "Hidden reasoning tokens per record, where reported separately.",
           lambda s: _observed(s.signals.reasoning_tokens)),
    Family("llm_output_token_counts", "counter",
           "Records by how output tokens were obtained: provider usage, or the tokenizer "
           "(with the encoding used).",
           lambda s: s.signals.token_methods.items(), ("method", "encoding")),
    Family("llm_refusals", "counter", "Records judged refusals.",
           lambda s: sum(s.signals.refusals.values())),
    Family("llm_refusals_by_kind", "counter",
           "Refusals by how they were recognized: structured, phrase, custom.",
           lambda s: [(kind, s.signals.refusals[kind]) for kind in REFUSAL_KINDS], ("kind",)),
    Family("llm_format_checked", "counter",
           "Records checked against the stream's format expectation (refusals excluded).",
           _format_checked),
    Family("llm_format_invalid", "counter", "Checked records that failed, by reason.",
           _format_invalid, ("reason",)),
    Family("llm_embeddings", "counter",
           "Records embedded, by source of the vector: user (supplied) or builtin.",
           lambda s: s.signals.embeddings.items(), ("source",)),
    Family("llm_drift_score", "gauge",
           "Drift statistic divided by its calibrated threshold; >= 1 means drift.",
           lambda d, _: d.score, ("signal",), per="signal"),
    Family("llm_drift_detected", "gauge",
           "1 while drift holds (until the stream is back at its baseline).",
           lambda d, _: d.drift_detected, ("signal",), per="signal"),
    Family("llm_drift_events", "counter", "Transitions into drift.",
           lambda d, _: d.events, ("signal",), per="signal"),
    Family("llm_drift_baseline_ready", "gauge",
           "1 once the baseline is learned and calibrated, so detection is live (rolling "
           "and seasonal baselines: while the current phase has a reference).",
           lambda d, _: d.reference_ready, ("signal",), per="signal"),
    Family("llm_drift_baseline_waiting", "gauge",
           "1 while a rolling or seasonal baseline is learned but the current phase has no "
           "reference yet (its first period, or too few records in this phase before): "
           "detection waits by design, nothing is stuck. Only signals with such a baseline.",
           lambda d, _: [] if d.seasons is None else
           [(d.seasons.mode.mode, d.waiting_for_reference)],
           ("signal", "baseline_mode"), per="signal"),
    Family("llm_signal_baseline", "gauge",
           "Summary of the signal over the baseline (mean, p50, p95 of tokens; rates; MMD^2).",
           _summary("baseline"), ("signal", "stat"), per="signal"),
    Family("llm_signal_window", "gauge",
           "The same summary over the recent window, to compare with llm_signal_baseline.",
           _summary("window"), ("signal", "stat"), per="signal"),
    # per signal only: several processes may each own some of the streams
    Family("llm_exporter_detector_errors", "counter",
           "Observations a detector could not take (e.g. an embedding of another dimension).",
           _detector_errors, ("signal",), summed=True),
)

# Label names of Prometheus itself (bucket and quantile labels, target labels) and of the
# exporter's own families (llm_exporter_input_*, _file_*, _http_push_responses,
# _build_info): a stream label of the same name would clash or confuse joins.
_OTHER_LABELS = frozenset({"le", "quantile", "job", "instance", "input", "path", "code",
                           "version"})
RESERVED_LABELS: frozenset[str] = (
    frozenset(name for family in FAMILIES for name in family.labels) | _OTHER_LABELS
)
