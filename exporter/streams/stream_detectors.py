"""The detectors of one stream, fed from each record's measurements.

Each signal sees only the records it applies to: format validity only the
records a format rule checked, embedding only records with a vector. Events
are logged with the index of the record in the *stream* (what the replay
report promises), not the index within the signal's own sub-sequence.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.detectors.base import MAX_HELD, Detector
from exporter.detectors.factory import SIGNALS, DetectorFactory
from exporter.signals.measure import Measurements

MAX_EVENTS_KEPT = 1000
log = logging.getLogger(__name__)


def signal_value(signal: str, m: Measurements) -> Any:
    """The observation a signal's detector gets from one record, or None to skip it."""
    if signal == "output_tokens":
        return float(m.output_tokens)
    if signal == "refusal":
        return m.refusal is not None
    if signal == "format_validity":
        return (m.format_invalid is not None) if m.format_checked else None
    return m.embedding


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
    detectors: dict[str, Detector]
    records: int = 0
    events: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    last_change: dict[str, int] = field(default_factory=dict)
    ready_at: dict[str, int] = field(default_factory=dict)
    # `baseline` command: once a detector's baseline is complete, stop feeding it
    learn_only: bool = False
    errors: Counter[str] = field(default_factory=Counter)  # by signal
    # signal -> record that completed its baseline while the threshold is simulated
    _completed_at: dict[str, int] = field(default_factory=dict)
    _held_at: dict[str, deque[int]] = field(default_factory=dict)  # indexes of held records

    @classmethod
    def create(cls, factory: DetectorFactory, learn_only: bool = False) -> StreamDetectors:
        made = {signal: factory.make(signal) for signal in SIGNALS}
        return cls(detectors={s: d for s, d in made.items() if d is not None},
                   learn_only=learn_only)

    def update(self, m: Measurements) -> None:
        self.update_many([m])

    def update_many(self, batch: Sequence[Measurements]) -> None:
        """A batch of this stream's records, in order. Each detector takes its values a run
        at a time (`Detector.update_run`), which ends at every change worth logging, so
        events keep the stream index of the record that raised them."""
        first = self.records
        self.records += len(batch)
        for signal, detector in self.detectors.items():
            values, indexes = signal_values(signal, batch, first)
            position = 0
            while position < len(values):
                if self.learn_only or detector.calibrating or not detector.baseline_ready:
                    self._update_one(signal, detector, values[position], indexes[position])
                    position += 1
                else:
                    position = self._update_run(signal, detector, values, indexes, position)

    def _update_run(self, signal: str, detector: Detector, values: list[Any],
                    indexes: Sequence[int], position: int) -> int:
        """A run of live observations from `position`; the position after those taken."""
        before = (detector.events, detector.drift_detected, detector.baseline_ready)
        observed = detector.observations
        try:
            after = detector.update_run(values, position)
        except Exception:
            taken = detector.observations - observed
            if taken:  # the last one taken failed
                self._failed(signal)
                return position + taken
            after = None
        if after is None:  # refused before taking any: fed alone, it is counted as there
            self._update_one(signal, detector, values[position], indexes[position])
            return position + 1
        if before != (detector.events, detector.drift_detected, True):
            self._account(signal, detector, before, indexes[after - 1])
        return after

    def _update_one(self, signal: str, detector: Detector, value: Any, index: int) -> None:
        if value is None or (self.learn_only and detector.baseline_ready):
            return
        if detector.calibrating:  # held by the detector: remember where it arrived
            self._held_at.setdefault(signal, deque(maxlen=MAX_HELD)).append(index)
        before = (detector.events, detector.drift_detected, detector.baseline_ready)
        try:
            detector.update(value)
        except Exception:  # a bug or bad input must not cost the record or the exporter
            self._failed(signal)
            return
        if before == (detector.events, detector.drift_detected, detector.baseline_ready):
            if not before[2] and detector.calibrating:
                # the record that completed the baseline; the threshold comes later
                self._completed_at.setdefault(signal, index + 1)
            return  # nothing to log: the common case, kept cheap
        self._account(signal, detector, before, index)

    def _failed(self, signal: str) -> None:
        self.errors[signal] += 1
        count = self.errors[signal]
        if count <= 3 or count % 1000 == 0:
            log.exception("detector for %s failed (%d failures)", signal, count)

    def _account(
        self, signal: str, detector: Detector, before: tuple[int, bool, bool], index: int
    ) -> None:
        """Log what changed in `detector` since `before` (events, drift, ready), with
        stream record indexes; held observations keep the index they arrived with."""
        events, in_drift, was_ready = before
        changed_at = index
        if detector.events != events:
            at, score = index, detector.score
            if detector.baseline_ready and not was_ready:  # found among held observations
                held_at = self._held_at.get(signal, deque())
                first = detector.event_log[events - detector.events]
                k = int(first["record"]) - (detector.observations - len(held_at))
                at = held_at[k] if 0 <= k < len(held_at) else index
                score = first["score"]
                changed_at = at if detector.events - events == 1 else index
            history = self.events.setdefault(signal, [])
            history.append({"record": at, "score": round(score, 4)})
            del history[:-MAX_EVENTS_KEPT]
        if detector.baseline_ready and not was_ready:
            self.ready_at[signal] = self._completed_at.pop(signal, index + 1)
            self._held_at.pop(signal, None)
        if (detector.events, detector.drift_detected) != (events, in_drift):
            self.last_change[signal] = changed_at

    def settle(self, wait: bool = False) -> None:
        """Finish calibrations that completed off-thread (before reading the state);
        `wait`: also those still running."""
        for signal, detector in self.detectors.items():
            if detector.calibrating:
                before = (detector.events, detector.drift_detected, False)
                try:
                    detector.settle(wait)
                except Exception:  # as in `update`: a bug costs this detector, not a scrape
                    self.errors[signal] += 1
                    log.exception("detector for %s failed to finish calibrating", signal)
                    detector.reset_baseline()
                    continue
                self._account(signal, detector, before, self.records - 1)

    def reset_baselines(self, signals: tuple[str, ...] = SIGNALS) -> list[str]:
        done = []
        for signal in signals:
            detector = self.detectors.get(signal)
            if detector is not None:
                detector.reset_baseline()
                self.ready_at.pop(signal, None)
                self._completed_at.pop(signal, None)
                self._held_at.pop(signal, None)
                self.last_change[signal] = self.records
                done.append(signal)
        return done

    def snapshot(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "events": self.events,
            "last_change": self.last_change,
            "ready_at": self.ready_at,
            "detectors": {s: d.snapshot() for s, d in self.detectors.items()},
        }

    def restore(self, snapshot: dict[str, Any], factory: DetectorFactory) -> None:
        """All or nothing: detectors are rebuilt from the snapshot into fresh instances and
        swapped in only when every one of them restored (a ValueError/KeyError/TypeError
        leaves this stream as it was)."""
        restored = {}
        for signal, detector in self.detectors.items():
            state = snapshot["detectors"].get(signal)
            fresh = factory.make(signal)
            if state is not None and fresh is not None and state.get("kind") == fresh.kind:
                fresh.restore(state)
                restored[signal] = fresh
            else:
                restored[signal] = detector
        self.detectors = restored
        self.records = int(snapshot["records"])
        self.events = {k: list(v) for k, v in snapshot["events"].items()}
        self.last_change = {k: int(v) for k, v in snapshot["last_change"].items()}
        self.ready_at = {k: int(v) for k, v in snapshot.get("ready_at", {}).items()}
