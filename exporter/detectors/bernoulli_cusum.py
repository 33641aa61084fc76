"""Bernoulli CUSUM for rates of rare events (refusals, invalid formats).

Two log-likelihood-ratio CUSUMs compare the baseline rate p0 with rates
whose odds are `ratio` times higher and lower (about `ratio` times the rate
for rare events). p0 is the Jeffreys estimate
(events + 1/2) / (n + 1), so a baseline with no events still gives a usable,
small rate. The baseline lasts `baseline_size` records, longer (up to 3x) when it saw
the rarer outcome a few times but fewer than `min_events`. The threshold is simulated per
baseline count, with a per-stream guarantee: the upward CUSUM is fed the true
rate at the upper end of the 90% credible interval of the learned rate
(Jeffreys' Beta posterior), the downward one the lower end, so on at least
9 streams in 10 (those whose true rate lies in the interval) the mean run
length between false events is at least the expected run time. A stream
that learned 2.8% refusals for a true 2% is covered; averaging over the
posterior instead covered it only on average, and it paged again and again.

An event needs the window's rate to differ from the baseline's by
`min_effect` percentage points; it ends when a CUSUM of "back at the
baseline rate" vs "odds sqrt(ratio) times higher (lower)" reaches
log(expected_run_time) (Wald: no more often than once in that many
records while the change holds), so a persistent change is one event.

Examples
--------
>>> import numpy as np
>>> from exporter.detectors.base import DetectorSettings
>>> from exporter.detectors.calibration import CalibrationCache
>>> rng = np.random.default_rng(7)
>>> detector = BernoulliCusum(DetectorSettings(expected_run_time=10_000), CalibrationCache())
>>> for x in rng.random(3000) < 0.02:
...     detector.update(bool(x))
>>> detector.drift_detected
False
>>> for x in rng.random(1500) < 0.08:
...     detector.update(bool(x))
>>> detector.drift_detected
True
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import betaincinv

from exporter.detectors.base import Detector, DetectorSettings, finite_or_none
from exporter.detectors.calibration import (
    GUARANTEE,
    CalibrationCache,
    Plan,
    plan,
    seeded,
    threshold_for_run_length,
)
from exporter.detectors.references import Rates
from exporter.detectors.registry import METHODS

# defaults and bounds declared once, in the registry the config is checked against
_RATIO = METHODS["bernoulli_cusum"].param("ratio")
_MIN_EVENTS = METHODS["bernoulli_cusum"].param("min_events")
_MIN_EFFECT = METHODS["bernoulli_cusum"].param("min_effect")
_SIM_BLOCK = 250  # simulated steps whose outcomes are drawn in one call
DEFAULT_RATIO: float = _RATIO.default
# A rate learned from 4 events is off by +-50%: the detector would then report the
# baseline's own error as drift, for good. When the baseline saw a few events but fewer
# than this, learning goes on past baseline_size until it has (at most 3 x baseline_size
# records). A baseline with no event at all stops on time: rate ~0 is the useful answer
# there, and extending it would absorb the first burst into the baseline.
DEFAULT_MIN_EVENTS: int = _MIN_EVENTS.default
MAX_BASELINE_FACTOR = 3


def jeffreys_rate(events: int, n: int) -> float:
    return (events + 0.5) / (n + 1.0)


def _with_odds(p: float, factor: float) -> float:
    odds = p / (1.0 - p) * factor
    return odds / (1.0 + odds)


def increments(p0: float, ratio: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """(on event, on non-event) LLR steps of the upward and downward CUSUMs.

    The alternatives multiply the *odds* by `ratio`: about `ratio` times the rate for
    rare events, and still a valid rate when the baseline rate is high (a stream
    whose replies are mostly invalid)."""
    up = _with_odds(p0, ratio)
    down = _with_odds(p0, 1.0 / ratio)
    return (
        (math.log(up / p0), math.log((1 - up) / (1 - p0))),
        (math.log(down / p0), math.log((1 - down) / (1 - p0))),
    )


def simulate_maxima(events: int, n: int, ratio: float, how: Plan,
                    rng: np.random.Generator) -> np.ndarray:
    """Running maxima of the larger CUSUM, the upward one fed the true rate at the top of
    the GUARANTEE credible interval of the learned rate and the downward one its bottom:
    a bound on the false-alarm hazard for every true rate inside the interval (each
    CUSUM alarms more often the further the rate moves its way)."""
    paths = how.paths
    p0 = jeffreys_rate(events, n)
    (up_hit, up_miss), (down_hit, down_miss) = increments(p0, ratio)
    tail = (1.0 - GUARANTEE) / 2.0
    high, low = (float(betaincinv(events + 0.5, n - events + 0.5, q)) for q in (1 - tail, tail))
    up = np.zeros(paths)
    down = np.zeros(paths)
    maxima = np.zeros(paths)
    running = []
    for begin in range(0, how.length, _SIM_BLOCK):  # the steps of a block drawn at once
        steps = min(_SIM_BLOCK, how.length - begin)
        ups = np.where(rng.random((steps, paths)) < high, up_hit, up_miss)
        downs = np.where(rng.random((steps, paths)) < low, down_hit, down_miss)
        for t in range(steps):
            up += ups[t]
            np.maximum(up, 0.0, out=up)
            down += downs[t]
            np.maximum(down, 0.0, out=down)
            np.maximum(maxima, up, out=maxima)
            np.maximum(maxima, down, out=maxima)
            if how.is_checkpoint(begin + t):
                running.append(maxima.copy())
    return np.stack(running)


def bernoulli_threshold(events: int, n: int, ratio: float, expected_run_time: int,
                        cache: CalibrationCache) -> float:
    def compute() -> float:
        how = plan(expected_run_time)
        rng = seeded("bernoulli_cusum", events, n, ratio, expected_run_time, GUARANTEE)
        running = simulate_maxima(events, n, ratio, how, rng)
        # never below one step: a single record must not be able to raise an alarm
        steps = [abs(step) for pair in increments(jeffreys_rate(events, n), ratio) for step in pair]
        return max(threshold_for_run_length(running, how), max(steps))

    return cache.get(("bernoulli_cusum", events, n, ratio, expected_run_time, GUARANTEE),
                     compute)


class BernoulliCusum(Detector):
    kind = "bernoulli_cusum"

    def __init__(self, settings: DetectorSettings, cache: CalibrationCache,
                 ratio: float = DEFAULT_RATIO, min_events: int = DEFAULT_MIN_EVENTS,
                 min_effect: float = _MIN_EFFECT.default) -> None:
        _RATIO.check(ratio)
        _MIN_EVENTS.check(min_events)
        _MIN_EFFECT.check(min_effect)
        self.cache = cache
        self.ratio = ratio
        self.min_events = min_events
        self.min_effect = float(min_effect)
        super().__init__(settings)

    def _reset(self) -> None:
        super()._reset()
        self._baseline_events = 0
        self._baseline_n = 0
        self._ready = False
        self._threshold = math.inf
        self._steps = ((0.0, 0.0), (0.0, 0.0))
        self._up = 0.0
        self._down = 0.0
        self._window: deque[bool] = deque(maxlen=self.settings.window_size)
        self._back = ((0.0, 0.0), 0.0)  # during an event: (steps back, CUSUM of the way back)

    @property
    def baseline_ready(self) -> bool:
        return self._ready

    def _learn(self, x: Any) -> None:
        self._baseline_events += bool(x)
        self._baseline_n += 1
        size = self.settings.baseline_size
        rarer = min(self._baseline_events, self._baseline_n - self._baseline_events)
        if self._baseline_n >= size and (
            rarer == 0 or rarer >= self.min_events or self._baseline_n >= MAX_BASELINE_FACTOR * size
        ):
            self._calibrate()

    def _calibrate(self) -> None:
        self._calibrate_with(self._threshold_job(), self._apply_threshold)

    def _threshold_job(self) -> Callable[[], float]:
        events, n, ratio = self._baseline_events, self._baseline_n, self.ratio
        ert, cache = self.settings.expected_run_time, self.cache
        return lambda: bernoulli_threshold(events, n, ratio, ert, cache)

    def _apply_threshold(self, threshold: float) -> None:
        p0 = jeffreys_rate(self._baseline_events, self._baseline_n)
        self._steps = increments(p0, self.ratio)
        self._threshold = threshold
        self._ready = True

    def _reference_summary(self) -> Rates:
        return Rates()

    def _rebase(self, row: np.ndarray, size: int) -> None:
        """A phase's rate, judged as learned from `size` records (fewer than it had, the
        events scaled alike: the credible interval is a little wider, never narrower).
        During an event, the way back is tested against this phase's rate from now on."""
        scaled = min(size, round(float(row[1]) * size))
        ratio, ert, cache = self.ratio, self.settings.expected_run_time, self.cache

        def apply(threshold: float) -> None:
            self._baseline_events, self._baseline_n = scaled, size
            self._apply_threshold(threshold)
            if self._in_drift:
                back = self._back[1]
                self._started()
                self._back = (self._back[0], back)

        self._calibrate_with(lambda: bernoulli_threshold(scaled, size, ratio, ert, cache), apply)

    def _observe_run(self, xs: Sequence[Any], start: int) -> int:
        return self._observe_each(xs, start, self._observe)

    def _observe(self, x: Any) -> float:
        """One value into both CUSUMs (a step each: nothing to gain from numpy)."""
        hit = bool(x)
        self._window.append(hit)
        (up_hit, up_miss), (down_hit, down_miss) = self._steps
        cap = 2.0 * self._threshold
        self._up = min(cap, max(0.0, self._up + (up_hit if hit else up_miss)))
        self._down = min(cap, max(0.0, self._down + (down_hit if hit else down_miss)))
        if self._in_drift:
            (back_hit, back_miss), back = self._back
            self._back = ((back_hit, back_miss), max(0.0, back + (back_hit if hit else back_miss)))
        return max(self._up, self._down) / self._threshold

    def effect(self) -> float:
        """The window's rate minus the baseline's, in percentage points (absolute)."""
        if not self._window or not self._baseline_n:
            return 0.0
        window = sum(self._window) / len(self._window)
        return abs(window - self._baseline_events / self._baseline_n) * 100.0

    def _started(self) -> None:
        """The rate the way back is tested against: odds sqrt(ratio) times the baseline's
        in the direction that fired, half the CUSUM's design change on the log-odds scale.
        Not the window's rate: an estimate taken at an alarm is biased away from the
        baseline, and testing against it would end a real but smaller change (or one the
        learned baseline missed), then raise it again: flapping."""
        p0 = jeffreys_rate(self._baseline_events, self._baseline_n)
        half = math.sqrt(self.ratio)
        p1 = _with_odds(p0, half if self._up >= self._down else 1.0 / half)
        self._back = ((math.log(p0 / p1), math.log((1.0 - p0) / (1.0 - p1))), 0.0)

    def _back_to_baseline(self) -> bool:
        return self._back[1] >= math.log(self.settings.expected_run_time)

    def _rearm(self) -> None:
        self._up = self._down = 0.0
        self._back = ((0.0, 0.0), 0.0)

    @property
    def direction(self) -> str:
        return "up" if self._up >= self._down else "down"

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        if self._baseline_n:
            out["baseline"] = {"rate": self._baseline_events / self._baseline_n}
        if self._window:
            out["window"] = {"rate": sum(self._window) / len(self._window)}
        return out

    def _snapshot_state(self) -> dict[str, Any]:
        return {
            "baseline_events": self._baseline_events,
            "baseline_n": self._baseline_n,
            "ready": self._ready,
            "up": self._up,
            "down": self._down,
            "window": bytes(self._window).hex(),  # 0/1 bytes: two characters each
            "back": [*self._back[0], self._back[1]],
            # kept, so a restore (a restart, a stream moved to another process) does not
            # simulate it again: ~10 ms a stream, seconds for a partition of many streams
            "threshold": finite_or_none(self._threshold) if self._ready else None,
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        self._baseline_events = int(state["baseline_events"])
        self._baseline_n = int(state["baseline_n"])
        if state["ready"]:  # simulated again (cached), at once, if saved before it was kept
            saved = state.get("threshold")
            self._apply_threshold(self._threshold_job()() if saved is None else float(saved))
        self._up = float(state["up"])
        self._down = float(state["down"])
        window = state["window"]  # saved as a list of numbers or bools by older versions
        self._window.extend(bool(v) for v in (bytes.fromhex(window) if isinstance(window, str)
                                              else window))
        back_hit, back_miss, back = state.get("back", (0.0, 0.0, 0.0))
        self._back = ((float(back_hit), float(back_miss)), float(back))
