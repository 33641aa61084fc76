"""Plain-data views of stream state, shared by the JSON API, the landing page and replay.

Views only read: a calibration that finished off-thread is taken in on the ingest side
(`Pipeline.settle`), never here, so looking at a stream cannot change what it detects."""

from __future__ import annotations

from typing import Any

from exporter.detectors import SIGNALS
from exporter.streams.table import StreamState, StreamTable


def _change(summary: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Baseline vs window in plain numbers, with the relative change of each stat."""
    base, window = summary.get("baseline", {}), summary.get("window", {})
    out: dict[str, Any] = {}
    for stat in sorted(set(base) | set(window)):
        entry: dict[str, Any] = {"baseline": base.get(stat), "window": window.get(stat)}
        b, w = base.get(stat), window.get(stat)
        if b is not None and w is not None and b != 0:
            entry["relative_change"] = round((w - b) / abs(b), 4)
        out[stat] = entry
    return out


def _events(stream: StreamState, signal: str, log: list[dict[str, Any]], with_evidence: bool
            ) -> list[dict[str, Any]]:
    """The detector's event log; with evidence, each of the latest events with the examples
    it fired with (copies: the log itself is the detector's)."""
    evidence = stream.evidence if with_evidence else None
    noted = evidence.event_examples(signal) if evidence is not None else {}
    if not noted:
        return log
    return [{**event, "examples": noted[int(event["record"])]}
            if int(event["record"]) in noted else event for event in log]


def signal_view(stream: StreamState, signal: str, with_evidence: bool) -> dict[str, Any] | None:
    if stream.detectors is None or signal not in stream.detectors.detectors:
        return None
    detector = stream.detectors.detectors[signal]
    view: dict[str, Any] = {
        "detector": detector.kind,
        "baseline_ready": detector.reference_ready,
        "observations": detector.observations,
        "baseline_ready_at": stream.detectors.ready_at.get(signal),
        "drift_detected": detector.drift_detected,
        "score": round(detector.score, 4),
        "events": _events(stream, signal, detector.event_log, with_evidence),
        "last_change_record": stream.detectors.last_change.get(signal),
        "change": _change(detector.summary()),
    }
    if detector.seasons is not None:  # what the window is compared with, or why not
        view["baseline"] = detector.seasons.describe(detector)
    direction = getattr(detector, "direction", None)
    if direction is not None and detector.baseline_ready:
        view["direction"] = direction
    if with_evidence and stream.evidence is not None and detector.drift_detected:
        view["examples"] = stream.evidence.examples(signal, detector)
        if signal == "embedding":
            view["moved_features"] = stream.evidence.moved_features()
    return view


def stream_view(stream: StreamState, names: tuple[str, ...], with_evidence: bool = True
                ) -> dict[str, Any]:
    signals = {}
    for signal in SIGNALS:
        view = signal_view(stream, signal, with_evidence)
        if view is not None:
            signals[signal] = view
    return {
        "labels": dict(zip(names, stream.labels, strict=True)),
        "records": stream.records,
        "finish_reasons": dict(stream.finish_reasons),
        "served_models": dict(stream.served_models),
        "last_record_time": stream.last_record_time,
        "signals": signals,
    }


def streams_view(streams: StreamTable, with_evidence: bool = True) -> list[dict[str, Any]]:
    return [
        stream_view(stream, streams.label_names, with_evidence)
        for stream in sorted(streams, key=lambda s: s.labels)
    ]
