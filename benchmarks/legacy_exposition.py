"""The per-stream families as the exporter built them before issue 7, frozen.

prometheus_client MetricFamily objects rendered by its `generate_latest`: the "before"
of benchmarks/bench_scale.py and the reference tests/test_exposition*.py compare the
text renderer (exporter/stream_families.py) against. Not used by the exporter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.records.record import FINISH_REASONS
from exporter.signals.format import INVALID_REASONS
from exporter.streams.table import StreamTable


def legacy_stream_families(table: StreamTable) -> Iterator[Metric]:
    """Every per-stream family (and the detector errors), in `/metrics` order."""
    yield from _stream_metrics(table)
    yield from _signal_metrics(table)
    yield from drift_metrics(table)


class _Legacy:
    def __init__(self, table: StreamTable, rest: Collector) -> None:
        self.table, self.rest = table, rest

    def collect(self) -> Iterable[Metric]:
        yield from legacy_stream_families(self.table)
        yield from self.rest.collect()


def legacy_registry(table: StreamTable, rest: Collector) -> CollectorRegistry:
    """The registry the old `/metrics` handler rendered: stream families, then `rest`
    (the exporter's other families), then process and platform metrics."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Legacy(table, rest))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def _stream_metrics(table: StreamTable) -> Iterator[Metric]:
    names = list(table.label_names)
    records = CounterMetricFamily(
        "llm_records", "LLM records accepted, per stream.", labels=names
    )
    finish = CounterMetricFamily(
        "llm_finish_reasons",
        "Records by normalized finish reason (stop, length, content_filter, tool_call, "
        "refusal, error, other).",
        labels=[*names, "finish_reason"],
    )
    served = CounterMetricFamily(
        "llm_served_model_records",
        "Records by the model version the provider reports having served.",
        labels=[*names, "served_model"],
    )
    fingerprints = CounterMetricFamily(
        "llm_system_fingerprint_records",
        "Records by the provider's system_fingerprint, where reported.",
        labels=[*names, "system_fingerprint"],
    )
    last = GaugeMetricFamily(
        "llm_last_record_timestamp_seconds",
        "Time of the last record of the stream (record timestamp, else arrival time).",
        labels=names,
    )
    for stream in table:
        labels = list(stream.labels)
        records.add_metric(labels, stream.records)
        # every reason from 0, so rate() sees the first truncation of a stream
        for reason in FINISH_REASONS:
            finish.add_metric([*labels, reason], stream.finish_reasons[reason])
        for model, count in stream.served_models.items():
            served.add_metric([*labels, model], count)
        for fingerprint, count in stream.system_fingerprints.items():
            fingerprints.add_metric([*labels, fingerprint], count)
        if stream.last_record_time is not None:
            last.add_metric(labels, stream.last_record_time)
    yield from (records, finish, served, fingerprints, last)

def _signal_metrics(table: StreamTable) -> Iterator[Metric]:
    names = list(table.label_names)
    histograms = {
        attr: HistogramMetricFamily(name, help_text, labels=names)
        for attr, name, help_text in (
            ("output_tokens", "llm_output_tokens",
             "Visible output tokens per record (provider usage minus reasoning, else counted "
             "with the tokenizer)."),
            ("input_tokens", "llm_input_tokens", "Input tokens per record, where reported."),
            ("reasoning_tokens", "llm_reasoning_tokens",
             "Hidden reasoning tokens per record, where reported separately."),
        )
    }
    methods = CounterMetricFamily(
        "llm_output_token_counts",
        "Records by how output tokens were obtained: provider usage, or the tokenizer "
        "(with the encoding used).",
        labels=[*names, "method", "encoding"],
    )
    refusals = CounterMetricFamily(
        "llm_refusals", "Records judged refusals.", labels=names
    )
    by_kind = CounterMetricFamily(
        "llm_refusals_by_kind",
        "Refusals by how they were recognized: structured, phrase, custom.",
        labels=[*names, "kind"],
    )
    checked = CounterMetricFamily(
        "llm_format_checked",
        "Records checked against the stream's format expectation (refusals excluded).",
        labels=names,
    )
    invalid = CounterMetricFamily(
        "llm_format_invalid", "Checked records that failed, by reason.",
        labels=[*names, "reason"],
    )
    embedded = CounterMetricFamily(
        "llm_embeddings",
        "Records embedded, by source of the vector: user (supplied) or builtin.",
        labels=[*names, "source"],
    )
    for stream in table:
        labels = list(stream.labels)
        totals = stream.signals
        for attr, family in histograms.items():
            histogram = getattr(totals, attr)
            if histogram.observations:
                family.add_metric(labels, histogram.cumulative(), histogram.total)
        for (method, encoding), count in totals.token_methods.items():
            methods.add_metric([*labels, method, encoding], count)
        refusals.add_metric(labels, sum(totals.refusals.values()))
        for kind in ("structured", "phrase", "custom"):
            by_kind.add_metric([*labels, kind], totals.refusals[kind])
        if totals.format_checked:
            checked.add_metric(labels, totals.format_checked)
            # every reason from 0, so rate() sees the first failure of each kind
            for reason in INVALID_REASONS:
                invalid.add_metric([*labels, reason], totals.format_invalid[reason])
        for source, count in totals.embeddings.items():
            embedded.add_metric([*labels, source], count)
    yield from histograms.values()
    yield from (methods, refusals, by_kind, checked, invalid, embedded)


def drift_metrics(streams: StreamTable) -> Iterator[Metric]:
    names = list(streams.label_names)
    labels = [*names, "signal"]
    score = GaugeMetricFamily(
        "llm_drift_score",
        "Drift statistic divided by its calibrated threshold; >= 1 means drift.",
        labels=labels,
    )
    detected = GaugeMetricFamily(
        "llm_drift_detected",
        "1 while drift holds (clears after the score stays below 0.5 for a window).",
        labels=labels,
    )
    events = CounterMetricFamily(
        "llm_drift_events", "Transitions into drift.", labels=labels
    )
    ready = GaugeMetricFamily(
        "llm_drift_baseline_ready",
        "1 once the baseline is learned and calibrated, so detection is live.",
        labels=labels,
    )
    baseline = GaugeMetricFamily(
        "llm_signal_baseline",
        "Summary of the signal over the baseline (mean, p50, p95 of tokens; rates; MMD^2).",
        labels=[*labels, "stat"],
    )
    window = GaugeMetricFamily(
        "llm_signal_window",
        "The same summary over the recent window, to compare with llm_signal_baseline.",
        labels=[*labels, "stat"],
    )
    errors = CounterMetricFamily(
        "llm_exporter_detector_errors",
        "Observations a detector could not take (e.g. an embedding of another dimension).",
        labels=["signal"],
    )
    error_totals: dict[str, int] = {}
    for stream in streams:
        if stream.detectors is None:
            continue
        for signal, count in stream.detectors.errors.items():
            error_totals[signal] = error_totals.get(signal, 0) + count
        for signal, detector in stream.detectors.detectors.items():
            values = [*stream.labels, signal]
            score.add_metric(values, detector.score)
            detected.add_metric(values, 1.0 if detector.drift_detected else 0.0)
            events.add_metric(values, detector.events)
            ready.add_metric(values, 1.0 if detector.baseline_ready else 0.0)
            summary = detector.summary()
            for stat, value in summary.get("baseline", {}).items():
                baseline.add_metric([*values, stat], value)
            for stat, value in summary.get("window", {}).items():
                window.add_metric([*values, stat], value)
    for signal, count in sorted(error_totals.items()):
        errors.add_metric([signal], count)
    yield from (score, detected, events, ready, baseline, window, errors)
