"""What the seasonal-state tests share: a cyclic stream whose day is squeezed into 30
minutes, the factories, feeding, and snapshots plain and through the store."""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any

from exporter.config import parse_config
from exporter.detectors.calibration import CalibrationCache
from exporter.detectors.factory import DetectorFactory
from exporter.inputs.stats import InputStats
from exporter.signals.measure import Measurements
from exporter.streams.checkpoint import Checkpointer, saved_streams, stream_key
from exporter.streams.pipeline import Pipeline
from exporter.streams.store import Saved
from exporter.streams.stream_detectors import StreamDetectors
from exporter.streams.table import StreamState
from tests import samples
from tests.state_helpers import plain

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from seasonal_streams import DAY, Change, Shape, records

# Thresholds are pure functions of their keys: one cache for the whole module, so each
# reference size is simulated once.
CACHE = CalibrationCache()
SCALE = 48.0  # the generator's day becomes 30 minutes: a period of "30m" is a day
PHASED = ("output_tokens", "refusal", "embedding")  # the signals the cyclic stream feeds
SEASONAL = {"mode": "seasonal", "period": "30m", "phase": "15m"}  # day and night halves
ROLLING = {"mode": "rolling", "period": "15m"}


def section(baseline: dict[str, Any]) -> dict[str, Any]:
    """A small detectors section (baselines of 20, short windows) with `baseline`."""
    return {"baseline_size": 20, "window_size": 20, "expected_run_time": 500,
            "baseline": baseline}


def factory(baseline: dict[str, Any] = SEASONAL) -> DetectorFactory:
    made = DetectorFactory.from_config(section(baseline))
    made.cache = CACHE
    return made


@functools.cache
def stream() -> tuple[list[Measurements], list[float]]:
    """Three periods of a day/night stream (about 200 records a period), with timestamp
    jitter, stragglers an hour or more late (a few minutes here) and, in the third period,
    a change of length, refusals and topics. Every ninth record has no embedding, so the
    embedding detector gets its own subsequence of the records and of their times; one in
    53 is stamped centuries ahead (misdated: taken at the stream's latest time)."""
    out = list(records(Shape("halves", per_day=200, jitter=600.0, late_share=0.02,
                             refusal=0.1), days=3.0, seed=3,
                       change=Change(at=2 * DAY, length=1.8, refusal_odds=4.0,
                                     topic_shift=0.5)))
    measured = [dataclasses.replace(m, embedding=None) if i % 9 == 4 else m
                for i, (_, m, _) in enumerate(out)]
    return measured, [FUTURE if i % 53 == 26 else t / SCALE for i, (t, _, _) in enumerate(out)]


FUTURE = 4e10  # the year 3237


def index_at(seconds: float) -> int:
    """The first record stamped at or after `seconds` (the stream's time; misdated records
    are not where a cut is put)."""
    return next(i for i, t in enumerate(stream()[1]) if seconds <= t < FUTURE)


def feed(detectors: StreamDetectors, start: int, end: int) -> None:
    ms, ts = stream()
    detectors.update_many(ms[start:end], ts[start:end])


def state_of(detectors: StreamDetectors) -> dict[str, Any]:
    """Everything a stream's detectors would show or save, as plain data: the snapshot
    (events, each detector's state and its seasons: table, clock, current summary), what
    the API says each compares with, and the failures counted."""
    return {
        "snapshot": plain(detectors.snapshot()),
        "described": {s: d.seasons.describe(d) for s, d in detectors.detectors.items()
                      if d.seasons is not None},
        "ready": {s: d.reference_ready for s, d in detectors.detectors.items()},
        "errors": dict(detectors.errors),
    }


def restored_from(saved: dict[str, Any], made: DetectorFactory) -> StreamDetectors:
    """A fresh stream's detectors with `saved` restored into them, as a restart does."""
    fresh = StreamDetectors.create(made)
    fresh.restore(saved, made)
    return fresh


def stored(detectors: StreamDetectors) -> dict[str, Any]:
    """`detectors`' snapshot after the store's encoding (running state as JSON, the phase
    table as `Rows` slots, the current phase's values as `Growing` blocks), without a disk."""
    changes = Checkpointer().changes([StreamState(labels=("s",), detectors=detectors)], {}, {})
    saved = Saved(streams=changes.streams)
    for part in changes.parts:
        saved.parts[(part.stream, part.part)] = [part.slots[i] for i in range(part.length)]
    entries, failures = saved_streams(saved)
    assert failures == 0 and len(entries) == 1
    saved_detectors: dict[str, Any] = entries[0]["detectors"]
    return saved_detectors


@functools.cache
def one_go(mode: str) -> dict[str, Any]:
    """The state after the whole stream in one batch (`state_of`)."""
    detectors = StreamDetectors.create(factory(SEASONAL if mode == "seasonal" else ROLLING))
    feed(detectors, 0, len(stream()[0]))
    return state_of(detectors)


# --- through the SQLite store, as the service saves --------------------------------------
T0 = 1735689600.0  # 2025-01-01T00:00:00Z (in the past: a record ahead of the clock is misdated)
PHASE = 1800.0
PER_PHASE = 100
STORE_CONFIG: dict[str, Any] = {
    "detectors": {"baseline_size": 20, "window_size": 20, "expected_run_time": 1000,
                  "baseline": {"mode": "seasonal", "period": "1h", "phase": "30m"}},
}
LABELS = ("gpt-4o", "/chat")


def timed_records(first: int, end: int, change_from: int = 10**9) -> list[dict[str, Any]]:
    """Records first..end-1 of a stream of PER_PHASE records a phase, each stamped with its
    time: day phases short invoices, night phases long notes; from `change_from` on, every
    answer is 60 tokens longer."""
    out = []
    for i in range(first, end):
        stamp = T0 + i * PHASE / PER_PHASE
        night = (i // PER_PHASE) % 2
        text = f"Night note {i % 13} on tides." if night else f"Invoice {i % 11} attached."
        record = samples.chat(text=text)
        record["timestamp"] = stamp
        record["response"]["usage"]["completion_tokens"] = (
            (40 if night else 10) + (i * 7) % 9 + (60 if i >= change_from else 0))
        out.append(record)
    return out


def store_pipeline(config: dict[str, Any] = STORE_CONFIG) -> Pipeline:
    pipeline = Pipeline(parse_config(config))
    pipeline.detector_factory.cache = CACHE
    return pipeline


def ingest(pipeline: Pipeline, first: int, end: int, change_from: int = 10**9) -> None:
    batch = timed_records(first, end, change_from)
    assert pipeline.ingest_values(batch, InputStats("t", "test")).accepted == len(batch)


def seasons_parts(changes: Any) -> dict[str, Any]:
    """The checkpoint's part changes of the seasons (`<signal>.seasons.table|values`)."""
    return {p.part: p for p in changes.parts
            if p.stream == stream_key(LABELS) and ".seasons." in p.part}
