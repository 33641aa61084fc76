"""The one Detector interface every signal's detector implements.

Shape borrowed from river's drift detectors (one `update()` per observation,
then read-only state), with differences that alerting needs:

- the state is a *level* (`drift_detected` holds while the change holds),
  not an edge, so a Prometheus alert can fire and resolve;
- a detector learns its own baseline from the first `baseline_size`
  observations and calibrates its threshold from it, so `score` (statistic
  divided by threshold) means the same on every stream: >= 1 is a change
  the statistics are sure of;
- one event per change. An event starts when the score reaches 1 *and* the
  change is practically significant (`_practical`: a detector with a floor
  in its signal's units, such as "mean or p95 tokens moved by 10%", holds
  back a statistically certain but negligible change). It then lasts until
  `_back_to_baseline` says the stream is back: the CUSUM and MMD detectors
  run a sequential test of "back at the baseline" against "still shifted by
  part of the change that fired", so a persistent change stays one event
  however its score hovers; by default (river) the score must stay below
  `release_level` for `window_size` consecutive observations. Then the
  detector re-arms from rest, so the time to the next false event again has
  the calibrated distribution (calibration targets the mean run length from
  rest).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from exporter.detectors.episodes import Episodes
from exporter.detectors.parts import AT_ONCE, held_of, held_state

if TYPE_CHECKING:
    from exporter.detectors.references import Summary
    from exporter.detectors.seasonal import Seasons

HYSTERESIS = 0.5
# Observations kept while a calibration runs (five default windows; beyond: the stream
# waits for it): bounded, as many streams may wait for the calibration thread at once.
MAX_HELD = 1000
T = TypeVar("T")


def finite_or_none(value: float) -> float | None:
    """JSON has no infinity (orjson writes null): thresholds of detectors still learning
    are stored as None and read back as infinity."""
    return value if math.isfinite(value) else None


def from_stored(value: float | None) -> float:
    return math.inf if value is None else float(value)


@dataclass(frozen=True)
class DetectorSettings:
    expected_run_time: int = 100_000
    baseline_size: int = 1000
    window_size: int = 200
    seed: int = 0


class Detector(Episodes, ABC):
    """Base class: baseline collection, level state with hysteresis, event counting."""

    kind: str = "detector"
    min_effect: float = 0.0  # the practical-significance floor (0: none), see `_practical`
    fine_rungs: bool = True  # which reference sizes a rebase calibrates for (`references`)

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        # Where thresholds are simulated: None = at once, in `update` (replay, tests: the
        # same records give the same events); a thread pool in a running exporter, so a
        # baseline completing does not stall scrapes (see `_calibrate_with`).
        self.executor: Executor | None = None
        # rolling and seasonal baselines (the factory sets it); None: a fixed baseline
        self.seasons: Seasons | None = None
        self._reset()

    def _reset(self) -> None:
        self._observations = 0
        self._in_drift = False
        self._calm = 0
        self._events = 0
        self._event_log: list[dict[str, float]] = []
        self._score = 0.0
        self._baseline_ready_at: int | None = None
        self._drift_since: int | None = None
        self._completed_record: int | None = None
        self._last_change_record: int | None = None
        self._gate_next = 0  # below the floor: the observation count of the next look
        self._calibrating: Future[Any] | None = None
        self._apply: Callable[[Any], None] | None = None
        # (observation, its record) that arrived while calibrating (the latest MAX_HELD)
        self._held: deque[tuple[Any, int]] = deque(maxlen=MAX_HELD)
        self._held_from = 0  # observations when the baseline was complete

    # --- the contract -------------------------------------------------------------
    def update(self, x: Any, record: int | None = None) -> None:
        """Feed one observation; learning the baseline first, detecting after. `record`:
        the index its events are logged with (a stream's record index; by default the
        observation's own 0-based index)."""
        self.update_run((x,), 0, None if record is None else (record,))

    def update_run(self, xs: Sequence[Any], start: int,
                   records: Sequence[int] | None = None,
                   times: Sequence[float] | None = None) -> int:
        """Feed `xs[start:]` until the drift level changes (an event starts or an episode
        ends) and return the index after the last observation taken, so a caller sees each
        change where it happened. `records[i]` is the index `xs[i]` is logged with (default:
        its own observation index); `times[i]` its time in seconds since the epoch (read by
        rolling and seasonal baselines only: a run then also ends where a phase does).
        Detecting from a learned baseline, a detector takes the whole run at once
        (`_observe_run`); learning and calibrating take one at a time. However a sequence
        is cut into runs, the state, scores and events are the same."""
        if start >= len(xs):
            return start
        if self.seasons is not None:
            return self.seasons.update_run(self, xs, start, records, times)
        return self._update_run(xs, start, records)

    def _update_run(self, xs: Sequence[Any], start: int,
                    records: Sequence[int] | None) -> int:
        """`update_run` against the reference the detector has now."""
        if self._calibrating is None and self.baseline_ready:  # detecting: the common case
            in_drift = self._in_drift
            end = self._observe_run(xs, start)
            if self._in_drift is not in_drift:  # a run ends with a change: log it there
                self._changed(self._observations - 1 if records is None else records[end - 1])
            return end
        if self._calibrating is not None:  # held, the whole run (in order: as one at a time)
            count = len(xs) - start
            if len(self._held) + count > MAX_HELD:  # a backlog: wait, never drop the oldest
                self.settle(wait=True)  # (the same records meet the same threshold)
                return self._update_run(xs, start, records)
            self._observations += count
            self._held.extend(zip(xs[start:], range(self._observations - count,
                                                    self._observations)
                                  if records is None else records[start:], strict=True))
            self.settle(wait=False)
            return len(xs)
        record = self._observations if records is None else records[start]
        self._observations += 1
        self._learn(xs[start])
        if self.baseline_ready or self._calibrating is not None:
            self._completed_record = record
        if self.baseline_ready:
            self._baseline_ready_at = self._observations
        return start + 1

    @abstractmethod
    def _observe_run(self, xs: Sequence[Any], start: int) -> int:
        """`update_run` from a learned baseline: for each value from `start`, count it in
        `_observations`, update the statistic and `_step` its score, stopping after the
        first that changes the drift level; the index after the last one taken. A value
        that raises is counted as observed."""

    def _observe_each(self, xs: Sequence[Any], start: int,
                      observe: Callable[[Any], float]) -> int:
        """`_observe_run` for a statistic updated one value at a time (`observe`: one
        value's score)."""
        for index in range(start, len(xs)):
            self._observations += 1
            if self._step(observe(xs[index])):
                return index + 1
        return len(xs)

    def _step(self, score: float) -> bool:
        """Take one live observation's score (already counted in `_observations`);
        True when the drift level changed with it."""
        self._score = score
        in_drift = self._in_drift
        if not in_drift and score < 1.0:  # the common case: `_apply_hysteresis` does nothing
            return False
        self._apply_hysteresis()
        return self._in_drift is not in_drift

    def _calibrate_with(self, job: Callable[[], T], apply: Callable[[T], None]) -> None:
        """Run a threshold simulation (`job`, pure: it must not touch the detector) and
        `apply` its result: at once without an executor, else on the executor, holding
        the observations that arrive meanwhile and observing them, in order, once the
        result is in. Either way the same observations meet the same threshold."""
        if self.executor is None:
            apply(job())
            return
        self._calibrating, self._apply = self.executor.submit(job), apply
        self._held_from = self._observations  # the baseline's last observation

    @property
    def calibrating(self) -> bool:
        """The baseline is complete and its threshold is being simulated off-thread."""
        return self._calibrating is not None

    def settle(self, *, wait: bool) -> None:
        """Take a finished calibration's result and observe what was held meanwhile, each
        logged with the record it arrived with. `update` calls it, and so does the ingest
        side's periodic tick (a stream that went quiet still turns ready); `wait` blocks
        for a running one. Only call it from the thread that calls `update`: readers never
        do, so reading never changes a detector."""
        future = self._calibrating
        if future is None or not (wait or future.done()):
            return
        assert self._apply is not None
        held, apply = self._held, self._apply
        self._calibrating, self._apply, self._held = None, None, deque(maxlen=MAX_HELD)
        apply(future.result())
        if self._baseline_ready_at is None:  # (a rebase on a phase's reference: ready already)
            self._baseline_ready_at = self._held_from
        self._replay(held)

    def _replay(self, held: deque[tuple[Any, int]]) -> None:
        """Observe what was held during a calibration, each logged with its record (they
        are already counted in `_observations`)."""
        now = self._observations
        self._observations = now - len(held)  # older ones beyond MAX_HELD: counted, not seen
        values, records = [x for x, _ in held], [record for _, record in held]
        position = 0
        try:
            while position < len(values):
                position = self._update_run(values, position, records)
        finally:
            self._observations = now

    def _calibrate(self) -> None:
        """Start simulating the threshold of a complete baseline (`_calibrate_with`);
        detectors that simulate one say how. Also called to resume a calibration that
        was running when the state was saved: for a detector that never calibrates, such
        a state is not its own (restoring it fails, and the stream re-learns)."""
        raise ValueError(f"a {self.kind} detector has no calibration to resume")

    @property
    def reference_ready(self) -> bool:
        """Detection is live: the baseline is learned and calibrated and, with a rolling or
        seasonal baseline, the current phase has a reference to compare with."""
        return self.baseline_ready and (self.seasons is None or self.seasons.comparing)

    @property
    def waiting_for_reference(self) -> bool:
        """Learned, but the current phase of a rolling or seasonal baseline has no
        reference yet: not ready by design (see `seasonal`)."""
        return self.seasons is not None and self.baseline_ready and not self.seasons.comparing

    def _reference_summary(self) -> Summary | None:
        """A new summary of one phase for a rolling or seasonal baseline (`references`);
        None while the detector cannot make one (its features are not learned yet)."""
        return None

    def _rebase(self, row: Any, size: int) -> None:
        """Compare from now on with a phase's reference (`row`, see `references`), judged
        as a reference of `size` records: the threshold for it is simulated (held
        observations wait for it, as for a baseline) and the statistic carries on."""
        raise ValueError(f"a {self.kind} detector has no rolling or seasonal baseline")

    @property
    def drift_detected(self) -> bool:
        return self._in_drift

    @property
    def score(self) -> float:
        return self._score

    @property
    def events(self) -> int:
        return self._events

    @property
    def event_log(self) -> list[dict[str, float]]:
        """The latest MAX_EVENTS events as {"record": the record it was logged with (see
        `update`), "score": score then}."""
        return self._event_log

    @property
    def completed_record(self) -> int | None:
        """The record that completed the baseline (its threshold may still be simulated)."""
        return self._completed_record

    @property
    def last_change_record(self) -> int | None:
        """The record with which the drift level last changed (an event, an episode end)."""
        return self._last_change_record

    @property
    def observations(self) -> int:
        return self._observations

    @property
    def baseline_ready_at(self) -> int | None:
        return self._baseline_ready_at

    @property
    def release_level(self) -> float:
        """Score below which a drift episode may end (after a window of calm records).

        0.5 suits statistics that rest near 0 without change (CUSUMs); a detector whose
        statistic rests higher under no change raises it (see EmbeddingMmd)."""
        return HYSTERESIS

    @property
    @abstractmethod
    def baseline_ready(self) -> bool: ...

    @abstractmethod
    def _learn(self, x: Any) -> None:
        """Add a baseline observation; calibrate once the baseline is complete."""

    @abstractmethod
    def _rearm(self) -> None:
        """Restart the statistic after a drift episode ends."""

    @abstractmethod
    def summary(self) -> dict[str, dict[str, float]]:
        """`{"baseline": {stat: v}, "window": {stat: v}}` in the signal's own units."""

    def reset_baseline(self) -> None:
        """Forget the baseline (after an intended change); the next observations re-learn it."""
        events, log = self._events, self._event_log
        self._reset()
        self._events, self._event_log = events, log
        if self.seasons is not None:  # the references too: a full period is learned again
            self.seasons.reset()

    # --- persistence --------------------------------------------------------------
    def snapshot(self, with_log: bool = True) -> dict[str, Any]:
        """The detector's state (see `restore`). `with_log=False` leaves out the event
        log, for a caller that keeps it (a stream's checkpoint saves its events once)."""
        saved = self._snapshot(with_log)
        if self.seasons is not None:
            saved["seasons"] = self.seasons.snapshot()
        return saved

    def _snapshot(self, with_log: bool) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "observations": self._observations,
            "in_drift": self._in_drift,
            "calm": self._calm,
            "events": self._events,
            "event_log": self._event_log[-100:] if with_log else None,
            "score": self._score,
            "baseline_ready_at": self._baseline_ready_at,
            "drift_since": self._drift_since,
            "gate_next": self._gate_next,
            "state": self._snapshot_state(),
            "calibrating": None if self._calibrating is None else self._held_snapshot(),
        }

    def _held_snapshot(self) -> dict[str, Any]:
        """A calibration in progress, saved as its cause: the baseline is in the state, the
        observations held meanwhile here. Restored, the simulation runs again and they are
        taken in as they would have been: nothing waits for a calibration to save."""
        return held_state(self._held, self._held_from, self._completed_record,
                          self._observations - self._held_from)

    def _resume_calibration(self, saved: dict[str, Any]) -> None:
        """Start the saved calibration again, holding what it held. Without an executor
        it runs at once, and its result is taken in by the next `settle` like any other
        (so the stream accounts for the baseline turning ready, see StreamDetectors)."""
        held, self._completed_record = held_of(saved)
        executor = self.executor
        self.executor = executor or AT_ONCE
        try:
            if self.seasons is not None and self.seasons.comparing:
                self.seasons.resume(self)  # a rebase on the phase's reference
            else:
                self._calibrate()
        finally:
            self.executor = executor
        self._held, self._held_from = deque(held, maxlen=MAX_HELD), int(saved["from"])

    def restore(self, snapshot: dict[str, Any]) -> None:
        if snapshot.get("kind") != self.kind:
            raise ValueError(f"snapshot of a {snapshot.get('kind')} detector, not {self.kind}")
        self._observations = int(snapshot["observations"])
        self._in_drift = bool(snapshot["in_drift"])
        self._calm = int(snapshot["calm"])
        self._events = int(snapshot["events"])
        self._event_log = list(snapshot.get("event_log") or [])
        self._score = float(snapshot["score"])
        self._baseline_ready_at = snapshot["baseline_ready_at"]
        self._drift_since = snapshot["drift_since"]
        self._gate_next = int(snapshot.get("gate_next", 0))  # absent: saved before floors
        self._restore_state(snapshot["state"])
        if self.seasons is not None:  # absent: saved with a fixed baseline (a config change
            self.seasons.reset()  # re-learns the whole state, see `state.settings_of`)
            if snapshot.get("seasons"):
                self.seasons.restore(snapshot["seasons"], self)
        if snapshot.get("calibrating"):
            self._resume_calibration(snapshot["calibrating"])

    @abstractmethod
    def _snapshot_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _restore_state(self, state: dict[str, Any]) -> None: ...
