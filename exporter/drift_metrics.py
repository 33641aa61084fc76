"""Drift metric families: the detectors' state per stream and signal, built at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.streams import StreamTable


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
