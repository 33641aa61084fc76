"""Per-stream state, keyed by the stream-label values, with a cardinality cap.

Records beyond `max_streams` distinct streams go to one overflow stream whose
label values are all `__other__`: the exporter keeps counting them without
letting a label typo (or a request id used as a label) explode the series
count of every scrape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.records.labels import sanitize_label_value
from exporter.records.record import Record
from exporter.signals.measure import Measurements
from exporter.signals.totals import SignalTotals, totals_restored, totals_snapshot
from exporter.streams.evidence import Evidence
from exporter.streams.stream_detectors import StreamDetectors

OVERFLOW_VALUE = "__other__"
# A stream's served-model values are bounded too: a provider that put a request id
# in `model` must not blow up `llm_served_model_records_total`.
MAX_SERVED_MODELS_PER_STREAM = 50


@dataclass
class StreamState:
    """What the exporter knows of one stream. Owned by StreamTable; read at scrape time."""

    labels: tuple[str, ...]
    records: int = 0
    finish_reasons: Counter[str] = field(default_factory=Counter)
    served_models: Counter[str] = field(default_factory=Counter)
    system_fingerprints: Counter[str] = field(default_factory=Counter)
    last_record_time: float | None = None
    signals: SignalTotals = field(default_factory=SignalTotals)
    detectors: StreamDetectors | None = None
    evidence: Evidence | None = None
    # counts changes to what a checkpoint saves (records observed, a calibration taken in,
    # a reset): a checkpoint saves the streams whose version moved since the last one
    version: int = 0
    # a partitioned source (a Kafka topic partition, "topic/3") -> the offset of the last
    # record of it this stream applied: a record delivered again (after a crash or a
    # rebalance) is not applied twice. The first source is the stream's home.
    positions: dict[str, int] = field(default_factory=dict)

    def counters(self) -> dict[str, Any]:
        """What the stream's counters say, saved with its detectors: they resume from
        there when the stream moves to another process or this one restarts."""
        return {
            "records": self.records,
            "finish_reasons": dict(self.finish_reasons),
            "served_models": dict(self.served_models),
            "system_fingerprints": dict(self.system_fingerprints),
            "last_record_time": self.last_record_time,
            "signals": totals_snapshot(self.signals),
            "positions": self.positions,
        }

    def restore_counters(self, saved: dict[str, Any]) -> None:
        """`counters()` read back; all or nothing (ValueError, KeyError, TypeError)."""
        signals = totals_restored(saved["signals"])
        counted = [Counter({str(k): int(v) for k, v in saved[name].items()})
                   for name in ("finish_reasons", "served_models", "system_fingerprints")]
        positions = {str(k): int(v) for k, v in saved["positions"].items()}
        last = saved["last_record_time"]
        self.records = int(saved["records"])
        self.finish_reasons, self.served_models, self.system_fingerprints = counted
        self.last_record_time = None if last is None else float(last)
        self.signals, self.positions = signals, positions

    def observe_many(
        self, records: Sequence[Record], measurements: Sequence[Measurements], now: float
    ) -> None:
        """A batch of this stream's records, in arrival order: the detectors then take
        their values a run at a time instead of one call chain per record."""
        if not records:
            return
        first = self.records if self.detectors is None else self.detectors.records
        self.records += len(records)
        self.version += 1
        for record, m in zip(records, measurements, strict=True):
            self.finish_reasons[record.finish_reason] += 1
            _bounded_increment(self.served_models, record.served_model)
            if record.system_fingerprint:
                _bounded_increment(self.system_fingerprints, record.system_fingerprint)
            self.signals.add(m)
        self.last_record_time = records[-1].timestamp or now
        detectors = self.detectors
        # a rolling or seasonal baseline reads each record's time: its own, else arrival
        times = [r.timestamp or now for r in records] \
            if detectors is not None and detectors.timed else None
        if self.evidence is not None:
            self._observe_with_evidence(self.evidence, records, measurements, first, times)
        elif detectors is not None:
            detectors.update_many(measurements, times)

    def _observe_with_evidence(self, evidence: Evidence, records: Sequence[Record],
                               measurements: Sequence[Measurements], first: int,
                               times: list[float] | None) -> None:
        """Evidence first, so the records that raise an alarm are among its examples when
        it fires; then the detectors, noting the examples of each new event."""
        detectors = self.detectors
        evidence.add_many(records, measurements, first,
                          None if detectors is None else detectors.detectors.get("output_tokens"))
        if detectors is not None:
            self._noting_events(evidence, detectors,
                                lambda: detectors.update_many(measurements, times))

    def settle(self, *, wait: bool) -> None:
        """`StreamDetectors.settle`, noting the examples of events that fired while the
        records held during a calibration were caught up on, as `observe_many` does for
        those that fire with a batch."""
        detectors = self.detectors
        if detectors is None:
            return
        calibrating = detectors.calibrating()
        if not calibrating:
            return
        if self.evidence is None:
            detectors.settle(wait=wait)
        else:
            self._noting_events(self.evidence, detectors, lambda: detectors.settle(wait=wait))
        if detectors.calibrating() != calibrating:  # a result was taken in
            self.version += 1

    @staticmethod
    def _noting_events(evidence: Evidence, detectors: StreamDetectors,
                       step: Callable[[], None]) -> None:
        """Run `step` on the detectors and keep the examples of each event it raised."""
        noted = evidence.events_noted(detectors.detectors)
        step()
        evidence.note_events(detectors.detectors, noted)

    def reset_baselines(self, signals: tuple[str, ...] | None = None) -> list[str]:
        self.version += 1
        if self.evidence is not None:
            self.evidence.reset_baseline(signals)
        if self.detectors is None:
            return []
        if signals:
            return self.detectors.reset_baselines(signals)
        return self.detectors.reset_baselines()


def _bounded_increment(counter: Counter[str], raw: str | None) -> None:
    value = raw or ""
    if value not in counter:  # clean values are their own keys: sanitize only new ones
        value = sanitize_label_value(value)
    if value not in counter and len(counter) >= MAX_SERVED_MODELS_PER_STREAM:
        value = OVERFLOW_VALUE
    counter[value] += 1


StreamParts = Callable[[], tuple[StreamDetectors | None, Evidence | None]]


class StreamTable:
    def __init__(
        self, label_names: tuple[str, ...], max_streams: int, make_parts: StreamParts | None = None
    ) -> None:
        self.label_names = label_names
        self._make_parts = make_parts
        self.max_streams = max_streams
        self._streams: dict[tuple[str, ...], StreamState] = {}
        self._overflow_key = tuple(OVERFLOW_VALUE for _ in label_names)
        self.overflow_records = 0

    def get(self, key: tuple[str, ...]) -> StreamState:
        """The stream for `key`, created on first sight unless the cap is reached."""
        stream = self._streams.get(key)
        if stream is not None:
            if key == self._overflow_key:
                self.overflow_records += 1
            return stream
        if len(self._streams) >= self.max_streams:
            self.overflow_records += 1
            key = self._overflow_key
            stream = self._streams.get(key)
            if stream is not None:
                return stream
        stream = StreamState(labels=key)
        if self._make_parts is not None:
            stream.detectors, stream.evidence = self._make_parts()
        self._streams[key] = stream
        return stream

    def matching(self, matchers: dict[str, str]) -> list[StreamState]:
        """Streams whose labels equal every given value (unknown label names match nothing)."""
        if any(name not in self.label_names for name in matchers):
            return []
        positions = {self.label_names.index(n): v for n, v in matchers.items()}
        return [s for s in self._streams.values()
                if all(s.labels[i] == v for i, v in positions.items())]

    def reset_matching(
        self, matchers: dict[str, str], signals: tuple[str, ...] | None = None
    ) -> list[tuple[str, ...]]:
        """Reset the baselines of the matching streams (all signals when None); their labels."""
        matched = self.matching(matchers)
        for stream in matched:
            stream.reset_baselines(signals)
        return [stream.labels for stream in matched]

    def drop(self, keys: Iterable[tuple[str, ...]]) -> None:
        """Forget these streams: this process no longer owns them (their partition moved
        to another member of the consumer group); their series go with them."""
        for key in keys:
            self._streams.pop(key, None)

    def __iter__(self) -> Iterator[StreamState]:
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)
