"""Drift families: the detectors' state per stream and signal, written at scrape time.

The detector error count is exported per signal only (summed over streams), so it
is handed to the merge as numbers rather than text: several processes may each
own some of the streams.
"""

from __future__ import annotations

from collections import Counter

from exporter.metrics.exposition import FamilySpec, escape_value, number
from exporter.streams.table import StreamState

DRIFT_FAMILIES = (
    FamilySpec("llm_drift_score", "gauge",
               "Drift statistic divided by its calibrated threshold; >= 1 means drift."),
    FamilySpec("llm_drift_detected", "gauge",
               "1 while drift holds (clears after the score stays below 0.5 for a window)."),
    FamilySpec("llm_drift_events", "counter", "Transitions into drift."),
    FamilySpec("llm_drift_baseline_ready", "gauge",
               "1 once the baseline is learned and calibrated, so detection is live."),
    FamilySpec("llm_signal_baseline", "gauge",
               "Summary of the signal over the baseline (mean, p50, p95 of tokens; rates; MMD^2)."),
    FamilySpec("llm_signal_window", "gauge",
               "The same summary over the recent window, to compare with llm_signal_baseline."),
)
DETECTOR_ERRORS = FamilySpec(
    "llm_exporter_detector_errors", "counter",
    "Observations a detector could not take (e.g. an embedding of another dimension).",
)
SIGNAL = ("signal",)
SIGNAL_STAT = ("signal", "stat")


def render_drift(
    stream: StreamState,
    segments: dict[tuple[str, ...], tuple[str, ...]],
    names: list[tuple[str, ...]],
    out: list[list[str]],
    errors: Counter[tuple[str, ...]],
) -> None:
    """Append one stream's samples of `DRIFT_FAMILIES` to `out` (one list per family;
    `names` their sample names) and add its detector errors to `errors`."""
    detectors = stream.detectors
    if detectors is None:
        return
    for signal, count in detectors.errors.items():
        errors[(signal,)] += count
    score, detected, events, ready, baseline, window = out
    (n_score,), (n_detected,), (n_events,), (n_ready,), (n_base,), (n_window,) = names
    a, b = segments[SIGNAL]
    sa, sb, sc = segments[SIGNAL_STAT]
    for signal, detector in detectors.detectors.items():
        sig = escape_value(signal)
        score.append(f"{n_score}{a}{sig}{b}{number(detector.score)}\n")
        detected.append(f"{n_detected}{a}{sig}{b}{'1.0' if detector.drift_detected else '0.0'}\n")
        events.append(f"{n_events}{a}{sig}{b}{number(detector.events)}\n")
        ready.append(f"{n_ready}{a}{sig}{b}{'1.0' if detector.baseline_ready else '0.0'}\n")
        summary = detector.summary()
        for stat, value in summary.get("baseline", {}).items():
            baseline.append(f"{n_base}{sa}{sig}{sb}{escape_value(stat)}{sc}{number(value)}\n")
        for stat, value in summary.get("window", {}).items():
            window.append(f"{n_window}{sa}{sig}{sb}{escape_value(stat)}{sc}{number(value)}\n")
