"""The level state of a detector: when an event starts, when its episode ends.

One event per change (see `base`): an event starts when the score reaches 1 *and* the
change is practically significant (`_practical`), and lasts until `_back_to_baseline`
says the stream is back. A mixin of `Detector`, apart so each file stays readable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporter.detectors.base import DetectorSettings

MAX_EVENTS = 1000  # events kept in a detector's log (the latest)
GATE_EVERY = 16  # see `Episodes._practical`


class Episodes:
    """The drift level with hysteresis, and the event log it writes."""

    settings: DetectorSettings
    min_effect: float
    _in_drift: bool
    _score: float
    _events: int
    _observations: int
    _drift_since: int | None
    _calm: int
    _gate_next: int
    _last_change_record: int | None
    _event_log: list[dict[str, Any]]
    release_level: float  # (Detector's)
    _rearm: Callable[[], None]  # (the detector's: restart the statistic after an episode)

    def _apply_hysteresis(self) -> None:
        if not self._in_drift:
            if self._score >= 1.0 and self._practical():
                self._in_drift = True
                self._events += 1
                self._drift_since = self._observations - 1
                self._started()
            return
        if self._back_to_baseline():
            self._in_drift = False
            self._drift_since = None
            self._rearm()

    def effect(self) -> float:
        """How far the window is from the baseline in the units of `min_effect` (a detector
        with a practical floor says; without one, any change counts)."""
        return math.inf

    def _practical(self) -> bool:
        """Whether a change the statistics are sure of (score >= 1) is large enough to be
        an event: `effect()` at least `min_effect`. While a change stays below the floor,
        it is looked at again every GATE_EVERY observations (the effect sorts or sums the
        window: cheap, but not for every record of a busy stream)."""
        if self.min_effect <= 0.0:
            return True
        if self._observations < self._gate_next:
            return False
        if self.effect() >= self.min_effect:
            return True
        self._gate_next = self._observations + GATE_EVERY
        return False

    def _started(self) -> None:
        """An event has just started: the count of calm observations starts again (a
        detector that tests for the way back notes the level it tests against)."""
        self._calm = 0

    def _back_to_baseline(self) -> bool:
        """Called for each observation during an episode: True ends it. By default the
        score must stay below `release_level` for `window_size` observations in a row."""
        self._calm = self._calm + 1 if self._score < self.release_level else 0
        return self._calm >= self.settings.window_size

    def _changed(self, record: int) -> None:
        """The drift level changed with the observation logged as `record` (the last of
        its run): an event starts (logged) or an episode ends."""
        self._last_change_record = record
        if self._in_drift:
            self._event_log.append({"record": record, "score": round(self._score, 4)})
            del self._event_log[:-MAX_EVENTS]
