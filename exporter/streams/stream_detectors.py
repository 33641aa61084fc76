"""The detectors of one stream, fed from each record's measurements.

Each signal sees only the records it applies to: format validity only the
records a format rule checked, embedding only records with a vector. Events
are logged with the index of the record in the *stream* (what the replay
report promises), not the index within the signal's own sub-sequence.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.detectors.base import Detector
from exporter.detectors.factory import SIGNALS, DetectorFactory
from exporter.signals.measure import Measurements

log = logging.getLogger(__name__)


def signal_value(signal: str, m: Measurements) -> Any:
    """The observation a signal's detector gets from one record, or None to skip it."""
    if signal == "output_tokens":
        return float(m.output_tokens)
    if signal == "refusal":
        return m.refusal is not None
    if signal == "format_validity":
        return (m.format_invalid is not None) if m.format_checked else None
    if signal == "embedding":
        return m.embedding
    raise ValueError(f"no observation is defined for signal {signal!r}: add it here")


def signal_values(
    signal: str, batch: Sequence[Measurements], first: int
) -> tuple[list[Any], Sequence[int]]:
    """`signal_value` of each record of a batch that has one, with its stream index
    (`first`: the index of the batch's first record)."""
    if signal == "output_tokens":
        return [float(m.output_tokens) for m in batch], range(first, first + len(batch))
    if signal == "refusal":
        return [m.refusal is not None for m in batch], range(first, first + len(batch))
    picked = [(first + offset, value) for offset, m in enumerate(batch)
              if (value := signal_value(signal, m)) is not None]
    return [value for _, value in picked], [index for index, _ in picked]


@dataclass
class StreamDetectors:
    """A stream's detectors, each fed its signal's values with their stream record indexes,
    so each detector's own event log is the stream's (`events`)."""

    detectors: dict[str, Detector]
    records: int = 0
    last_change: dict[str, int] = field(default_factory=dict)
    ready_at: dict[str, int] = field(default_factory=dict)
    # `baseline` command: once a detector's baseline is complete, stop feeding it
    learn_only: bool = False
    errors: Counter[str] = field(default_factory=Counter)  # by signal

    @classmethod
    def create(cls, factory: DetectorFactory, learn_only: bool = False) -> StreamDetectors:
        made = {signal: factory.make(signal) for signal in SIGNALS}
        detectors = {s: d for s, d in made.items() if d is not None}
        return cls(detectors=_learning(detectors, learn_only), learn_only=learn_only)

    @property
    def events(self) -> dict[str, list[dict[str, float]]]:
        """Each signal's latest events, {"record": stream record index, "score": ...}."""
        return {s: d.event_log for s, d in self.detectors.items() if d.event_log}

    @property
    def timed(self) -> bool:
        """Some detector compares by time (a rolling or seasonal baseline): it needs each
        record's time."""
        return any(detector.seasons is not None for detector in self.detectors.values())

    def update_many(self, batch: Sequence[Measurements],
                    times: Sequence[float] | None = None) -> None:
        """A batch of this stream's records, in order, with their times when `timed`. Each
        detector takes its values a run at a time (`Detector.update_run`), which ends at
        every change worth noting."""
        first = self.records
        self.records += len(batch)
        for signal, detector in self.detectors.items():
            values, indexes = signal_values(signal, batch, first)
            stamps = None if times is None or detector.seasons is None else (
                times if len(values) == len(times) else [times[i - first] for i in indexes])
            position = 0
            while position < len(values):
                if self.learn_only and detector.baseline_ready and detector.seasons is None:
                    break
                position = self._update_run(signal, detector, values, indexes, position,
                                            stamps)

    def _update_run(self, signal: str, detector: Detector, values: list[Any],
                    indexes: Sequence[int], position: int,
                    times: Sequence[float] | None) -> int:
        """A run of observations from `position`; the position after those taken."""
        before = (detector.events, detector.drift_detected, detector.baseline_ready)
        observed = detector.observations
        try:
            after = detector.update_run(values, position, indexes, times)
        except Exception:  # a bug or bad input must not cost the record or the exporter
            self._failed(signal)
            return position + max(1, detector.observations - observed)  # the last one failed
        if before != (detector.events, detector.drift_detected, detector.baseline_ready):
            self._account(signal, detector, before)  # rare: the common case is kept cheap
        return after

    def _failed(self, signal: str) -> None:
        self.errors[signal] += 1
        count = self.errors[signal]
        if count <= 3 or count % 1000 == 0:
            log.exception("detector for %s failed (%d failures)", signal, count)

    def _account(self, signal: str, detector: Detector, before: tuple[int, bool, bool]) -> None:
        """Note what changed in `detector` since `before` (events, drift, ready), at the
        stream record indexes the detector logged them with."""
        events, in_drift, was_ready = before
        if detector.baseline_ready and not was_ready and detector.completed_record is not None:
            self.ready_at[signal] = detector.completed_record + 1
        changed = detector.last_change_record
        if (detector.events, detector.drift_detected) != (events, in_drift) and changed is not None:
            self.last_change[signal] = changed

    def settle(self, *, wait: bool) -> None:
        """Finish calibrations that completed off-thread, on the ingest side (`update`
        does it for a stream that gets records; the ingest side's periodic tick for one
        that went quiet); `wait`: also those still running."""
        for signal, detector in self.detectors.items():
            if detector.calibrating:
                before = (detector.events, detector.drift_detected, False)
                try:
                    detector.settle(wait=wait)
                except Exception:  # as in `update`: a bug costs this detector, not the rest
                    self.errors[signal] += 1
                    log.exception("detector for %s failed to finish calibrating", signal)
                    detector.reset_baseline()
                    continue
                self._account(signal, detector, before)

    def calibrating(self) -> int:
        """How many of the detectors are simulating a threshold off-thread."""
        return sum(detector.calibrating for detector in self.detectors.values())

    def reset_baselines(self, signals: tuple[str, ...] = SIGNALS) -> list[str]:
        done = []
        for signal in signals:
            detector = self.detectors.get(signal)
            if detector is not None:
                detector.reset_baseline()
                self.ready_at.pop(signal, None)
                self.last_change[signal] = self.records
                done.append(signal)
        return done

    def snapshot(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "events": self.events,
            "last_change": self.last_change,
            "ready_at": self.ready_at,
            # each detector's own event log is the stream's `events` (restored from there)
            "detectors": {s: d.snapshot(with_log=False) for s, d in self.detectors.items()},
        }

    def restore(self, snapshot: dict[str, Any], factory: DetectorFactory) -> None:
        """All or nothing: detectors are rebuilt from the snapshot into fresh instances and
        swapped in only when every one of them restored (a ValueError/KeyError/TypeError
        leaves this stream as it was). The stream's `events` (up to MAX_EVENTS per signal,
        where a detector's own snapshot keeps its last 100) are the detectors' logs."""
        events = snapshot["events"]
        restored = {}
        for signal, detector in self.detectors.items():
            state = snapshot["detectors"].get(signal)
            fresh = factory.make(signal)
            if state is not None and fresh is not None and state.get("kind") == fresh.kind:
                fresh.restore({**state, "event_log": list(events.get(signal, []))})
                restored[signal] = fresh
            else:
                restored[signal] = detector
        _learning(restored, self.learn_only)
        self.records = int(snapshot["records"])
        last_change = {k: int(v) for k, v in snapshot["last_change"].items()}
        ready_at = {k: int(v) for k, v in snapshot.get("ready_at", {}).items()}
        self.detectors, self.last_change, self.ready_at = restored, last_change, ready_at


def _learning(detectors: dict[str, Detector], learn_only: bool) -> dict[str, Detector]:
    """Tell rolling and seasonal baselines whether the stream only learns (the `baseline`
    command: their phases are summarised, never compared)."""
    for detector in detectors.values():
        if detector.seasons is not None:
            detector.seasons.learn_only = learn_only
    return detectors
