"""Rolling and seasonal baselines: which reference a detector compares its window with, by time.

A detector with `Seasons` first learns its fixed baseline as always (that fixes its
features and calibrates it), then summarises each phase of the stream's time (`phase`
wide; a rolling baseline has one phase of `period`) into a compact reference
(`references`). When the stream enters a phase, the detector is *rebased* on the
reference of the same phase of earlier periods, its threshold simulated for that
reference's size, and compares the records of the phase with it. Its statistic carries on
across phases: a normal score, a log-likelihood ratio or a feature offset means the same
against any reference, so a change that starts at 09:50 is still one event at 10:10.

A phase without a usable reference (the first period, a phase that had fewer than
`min_records` records) is summarised but not compared: the detector says so
(`reference_ready` is False) rather than compare with a reference that is not there.

Time is the record's timestamp (so `replay` of old logs behaves as live traffic did). A
record without a usable one (none, or stamped in the future: misdated) takes the arrival
time on a live stream, the stream's latest time on one replayed from the past (see
`_resolved`). The stream's phase only moves forward. A record
stamped before the phase the stream is in (out of order across a phase boundary, or far
out of order) is counted as late and neither compared nor summarised: compared with the
new phase's reference it would be a record of another time of day, and the EWMA of a
sharp day/night switch would read the few minutes of stragglers after every boundary as
a change.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.detectors.baseline_modes import BaselineMode
from exporter.detectors.parts import Rows
from exporter.detectors.references import Summary, rung, rungs

if TYPE_CHECKING:
    from exporter.detectors.base import Detector

EMPTY = np.empty(0, dtype=np.float32)  # the row of a phase never seen (one shared object)
MAX_AHEAD = 300.0  # seconds a record may be stamped ahead of the clock here (skew)
_DAY = 86400.0


class Seasons:
    """The per-phase references of one detector, and the clock that picks among them."""

    def __init__(self, mode: BaselineMode, baseline_size: int) -> None:
        self.mode = mode
        self.baseline_size = baseline_size
        self.learn_only = False  # the `baseline` command: summarise, never compare
        self.reset()

    def reset(self) -> None:
        count = self.mode.phases
        self.table: list[np.ndarray] = [EMPTY] * count  # float32 rows (see `references`)
        # the last phase each row took in (4-byte ints: phases are >= 1 minute, counted
        # from 1970; the table stays within 64 KiB for a week of hours)
        self.taken = array("i", [-1] * count)
        self.now: float | None = None  # the latest record time
        self.bin: int | None = None  # the phase the stream is in (counted from the epoch)
        self.summary: Summary | None = None  # ... and its summary so far
        self.reference: int | None = None  # the phase whose reference is compared with
        self.late = 0  # records stamped before the phase the stream was in (not compared)
        self.uncompared = 0  # records seen while their phase had no usable reference
        self.misdated = 0  # records stamped in the future (taken at the latest time)
        # the batch being fed: its times, as resolved, and the run cut last (see `_enter`)
        self._batch: tuple[Any, list[float], tuple[int, int, int] | None] = (None, [], None)

    @property
    def comparing(self) -> bool:
        return self.reference is not None

    # --- feeding --------------------------------------------------------------------
    def update_run(self, detector: Detector, xs: Sequence[Any], start: int,
                   records: Sequence[int] | None, times: Sequence[float] | None) -> int:
        """`Detector.update_run` with references by phase: one run within one phase."""
        end = self._run(detector, xs, start, records, times)
        if end >= len(xs):  # the batch is done: its times are not kept
            self._batch = (None, [], None)
        return end

    def _run(self, detector: Detector, xs: Sequence[Any], start: int,
             records: Sequence[int] | None, times: Sequence[float] | None) -> int:
        stamps = self._resolved(times, len(xs))
        if not (detector.baseline_ready or detector.calibrating):
            self._consumed(stamps, start, start + 1)  # learning its features and threshold
            return detector._update_run(xs, start, records)
        end = self._enter(detector, stamps, start)
        if stamps[start] < self.bin * self.mode.width:  # type: ignore[operator]
            self.late += 1  # stamped before the phase the stream is in: not compared
            return start + 1
        if not self.comparing:  # (nor held by a first calibration: they would be compared
            self._summarise(xs, start, end)  # with the fixed baseline once it is in)
            self.uncompared += end - start
            self._consumed(stamps, start, end)
            return end
        whole = end == len(xs)
        stop = detector._update_run(xs if whole else xs[:end], start,
                                    records if records is None or whole else records[:end])
        self._summarise(xs, start, stop)
        self._consumed(stamps, start, stop)
        return stop

    def _resolved(self, times: Sequence[float] | None, count: int) -> list[float]:
        """Each record's time on the stream's clock, once per batch (a caller feeds the
        runs of one batch with the same `times`). Misdated (beyond now plus MAX_AHEAD)
        and unusable stamps (none, not a number, not after 1970) take the arrival time on
        a live stream; on one replayed from the past, NaN: the stream's latest time when
        the record is taken (whatever the batches). One bad clock cannot move a stream's
        phase, nor one record without a stamp jump a replay to today."""
        if times is not None and times is self._batch[0]:
            return self._batch[1]
        wall = time.time()
        limit = wall + MAX_AHEAD
        live = self.now is not None and self.now >= wall - self.mode.width
        fallback = wall if live else math.nan
        if times is None:
            resolved = [fallback] * count
        else:
            resolved = [stamp if 0.0 < stamp <= limit else fallback for stamp in times]
            self.misdated += sum(1 for stamp in times if limit < stamp < math.inf)
        self._batch = (times, resolved, None)
        return resolved

    def _enter(self, detector: Detector, stamps: list[float], start: int) -> int:
        """Move to the phase of `stamps[start]` (closing the one that ended) and pick its
        reference; the end of the run of records in that phase."""
        width = self.mode.width
        first = stamps[start]
        if self.now is None:
            self.now = first = first if first == first else time.time()  # (NaN: arrival)
        elif not first > self.now:  # (NaN too: the latest time)
            first = self.now
        if self.bin is None or first >= (self.bin + 1) * width:
            if detector.calibrating and self.comparing:  # a rebase in flight: its held
                try:  # records are this phase's (a first baseline's calibration is not
                    detector.settle(wait=True)  # waited for: nothing is held for it)
                except Exception:
                    self.reference = None  # (a bug: its reference is not the detector's)
                    raise
            self._close()
            self.bin = int(first // width)
            self.summary = detector._reference_summary()
            self.reference = None
        elif self.summary is None:  # the features were learned during this phase
            self.summary = detector._reference_summary()
        if self.reference is None and not detector.calibrating:
            self._choose(detector)
        cut = self._batch[2]
        if cut is not None and cut[0] == self.bin and cut[1] <= start < cut[2]:
            return cut[2]  # (a run held one by one: not scanned again for each record)
        begin, boundary = self.bin * width, (self.bin + 1) * width
        end = len(stamps)
        for index in range(start + 1, len(stamps)):
            if not begin <= stamps[index] < boundary:
                end = index
                break
        self._batch = (self._batch[0], self._batch[1], (self.bin, start, end))
        return end

    def _reference(self, detector: Detector) -> tuple[np.ndarray, int] | None:
        """The current phase's reference and the size it is calibrated as, if usable."""
        assert self.bin is not None
        row = self.table[self.bin % self.mode.phases]
        if not row.size or self.learn_only or float(row[0]) < self.mode.min_records:
            return None
        size = rung(float(row[0]), self.baseline_size, detector.fine_rungs)
        return None if size is None else (row, size)

    def _choose(self, detector: Detector) -> None:
        """Rebase the detector on its phase's reference, if there is a usable one."""
        assert self.bin is not None
        usable = self._reference(detector)
        if usable is not None:
            detector._rebase(*usable)
            self.reference = self.taken[self.bin % self.mode.phases]

    def resume(self, detector: Detector) -> None:
        """Start again the rebase a saved state was calibrating (`Detector.restore`)."""
        usable = self._reference(detector) if self.bin is not None else None
        if usable is None:
            raise ValueError("a rebase was saved without its phase's reference")
        detector._rebase(*usable)

    def _summarise(self, xs: Sequence[Any], start: int, stop: int) -> None:
        if self.summary is not None and stop > start:
            self.summary.add(xs[start:stop])

    def _consumed(self, stamps: list[float], start: int, stop: int) -> None:
        """Move the clock over the records taken (a NaN: at the latest time already)."""
        latest = max((stamp for stamp in stamps[start:stop] if stamp == stamp), default=None)
        if latest is not None and (self.now is None or latest > self.now):
            self.now = latest

    def _close(self) -> None:
        """Fold the phase that ended into its reference."""
        if self.summary is None or self.bin is None:
            return
        phase = self.bin % self.mode.phases
        older = self.table[phase]
        merged = type(self.summary).merge(older if older.size else None, self.summary.row(),
                                          self.mode.keep)
        if merged is not None and merged is not older:
            self.table[phase], self.taken[phase] = merged, self.bin
        self.summary = None

    # --- reading --------------------------------------------------------------------
    def describe(self, detector: Detector) -> dict[str, Any]:
        """The mode and what the window is compared with now, or why nothing is."""
        out = self.mode.described()
        out.update(late_records=self.late, misdated_records=self.misdated,
                   uncompared_records=self.uncompared)
        if self.reference is not None:
            out["compared_with"] = self._spelled(self.reference)
            row = self.table[self.reference % self.mode.phases]
            out["reference_records"] = int(row[0]) if row.size else 0
        elif self.bin is None or not (detector.baseline_ready or detector.calibrating):
            out["reason"] = "learning the baseline's features and threshold"
        elif self.learn_only:
            out["reason"] = "learning only (baseline command)"
        else:
            row = self.table[self.bin % self.mode.phases]
            least = max(self.mode.min_records, rungs(self.baseline_size)[0])
            out["reason"] = (
                f"no reference yet for {self._spelled(self.bin, span=False)}: the same phase "
                f"of an earlier period has not been seen" if not row.size else
                f"too few records ({int(row[0])}) in {self._spelled(self.bin, span=False)} of "
                f"earlier periods to compare with (at least {least})")
        return out

    def _spelled(self, phase: int, span: bool = True) -> str:
        """A phase as people read it: `09:00-10:00 UTC on 2026-12-02`."""
        width = self.mode.width
        begin = datetime.fromtimestamp(phase * width, UTC)
        end = datetime.fromtimestamp((phase + 1) * width, UTC)
        if width >= _DAY:
            text = f"{begin:%Y-%m-%d %H:%M} - {end:%Y-%m-%d %H:%M} UTC"
        else:
            weekday = f"{begin:%a} " if self.mode.period >= 7 * _DAY else ""
            text = f"{weekday}{begin:%H:%M}-{end:%H:%M} UTC"
        if not span:
            return text
        older = " and earlier periods, each half as much" if self.mode.keep else ""
        return f"{text} on {begin:%Y-%m-%d}{older}" if width < _DAY else text

    # --- persistence ----------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "mode": self.mode.described(),
            "table": Rows(list(self.table)),  # rows are replaced, never written to
            "taken": list(self.taken),
            "now": self.now,
            "bin": self.bin,
            "reference": self.reference,
            "summary": None if self.summary is None else self.summary.snapshot(),
            "late": self.late,
            "uncompared": self.uncompared,
            "misdated": self.misdated,
        }

    def restore(self, saved: dict[str, Any], detector: Detector) -> None:
        rows = saved["table"]
        rows = list(rows.rows if isinstance(rows, Rows) else rows)
        if len(rows) != self.mode.phases:
            raise ValueError(f"{len(rows)} phases saved, {self.mode.phases} configured")
        self.table = [np.asarray(row, dtype=np.float32) if len(row) else EMPTY for row in rows]
        self.taken = array("i", (int(b) for b in saved["taken"]))
        self.now = None if saved["now"] is None else float(saved["now"])
        self.bin = None if saved["bin"] is None else int(saved["bin"])
        self.reference = None if saved["reference"] is None else int(saved["reference"])
        summary = saved.get("summary")
        self.summary = None
        if summary is not None:
            self.summary = detector._reference_summary()
            if self.summary is not None:
                self.summary.restore(summary)
        self.late, self.uncompared = int(saved["late"]), int(saved["uncompared"])
        self.misdated = int(saved.get("misdated", 0))

