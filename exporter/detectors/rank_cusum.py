"""Rank CUSUM for a univariate signal with any distribution (output tokens).

Each live value is turned into its randomized rank against the baseline
sample (a probability integral transform: u in (0, 1), uniform under no
change whatever the distribution, ties in integer counts broken at random),
then into a normal score z = Phi^-1(u). Four one-sided CUSUMs watch z for a
shift up or down (answers got longer or shorter) and (z^2 - 1)/sqrt(2) for
a spread that grew or shrank. Because only ranks enter, the statistic is
distribution-free: one simulation calibrates every stream, heavy tails do no
harm, and rescaling the input (tokens vs characters) changes nothing.

Distribution-free, but not free of the baseline's luck: ranks against a
baseline whose sample fell a little low make every live value look a little
high. How much depends only on the baseline's uniform spacings, so the
threshold is simulated once for a baseline as unlucky as the GUARANTEE
quantile of them (rank_calibration.py), which again serves every stream.

An event needs the window's mean or p95 to differ from the baseline's by
`min_effect` (relative); it ends when a CUSUM of "back at the baseline" vs
"shifted by the allowance on the side that fired" reaches
log(expected_run_time): a persistent change stays one event, and a false end
comes no more often than a false event.

Examples
--------
>>> import numpy as np
>>> from exporter.detectors.base import DetectorSettings
>>> from exporter.detectors.calibration import CalibrationCache
>>> rng = np.random.default_rng(42)
>>> detector = RankCusum(DetectorSettings(expected_run_time=10_000), CalibrationCache())
>>> for x in rng.lognormal(5.0, 0.7, 2000):
...     detector.update(x)
>>> detector.drift_detected
False
>>> for x in rng.lognormal(5.0 + np.log(1.3), 0.7, 500):
...     detector.update(x)
>>> detector.drift_detected, detector.events
(True, 1)
"""

from __future__ import annotations

import logging
import math
import sys
from array import array
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import ndtri

from exporter.detectors.base import Detector, DetectorSettings, finite_or_none, from_stored
from exporter.detectors.calibration import CalibrationCache
from exporter.detectors.parts import Growing, one_row, the_row, values_of
from exporter.detectors.rank_calibration import rank_threshold
from exporter.detectors.references import Quantiles
from exporter.detectors.registry import METHODS

log = logging.getLogger(__name__)
# CUSUM reference value k, in standard-normal units (see docs); default and bounds declared
# once, in the registry the config is checked against
_ALLOWANCE = METHODS["rank_cusum"].param("allowance")
_MIN_EFFECT = METHODS["rank_cusum"].param("min_effect")
DEFAULT_ALLOWANCE: float = _ALLOWANCE.default
# The way back is tested against a shift of this share of the allowance (see `_started`).
BACK_SHIFT = 0.5
_SQRT2 = math.sqrt(2.0)
_MASK = (1 << 64) - 1
# splitmix64's constants, as numpy scalars so the arithmetic wraps at 64 bits
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(n) for n in (30, 27, 31, 11))
# Tie-breaking uniforms are computed this many at a time and kept for the next short runs:
# a one-record push then costs a slice, not a dozen numpy calls (see `RankCusum._uniforms`).
_BLOCK = 32


class RankCusum(Detector):
    kind = "rank_cusum"

    def __init__(self, settings: DetectorSettings, cache: CalibrationCache,
                 allowance: float = DEFAULT_ALLOWANCE,
                 min_effect: float = _MIN_EFFECT.default) -> None:
        _ALLOWANCE.check(allowance)
        _MIN_EFFECT.check(min_effect)
        self.cache = cache
        self.allowance = float(allowance)
        self.min_effect = float(min_effect)
        super().__init__(settings)

    def _reset(self) -> None:
        super()._reset()
        # learning: doubles in an array, a third of a list of floats (it peaks with every
        # other baseline sample); learned: sorted in a numpy array, searched a run at a time
        self._baseline = array("d")
        self._sorted: np.ndarray | None = None
        self._baseline_stats: dict[str, float] = {}
        self._threshold = math.inf
        self._sums = [0.0, 0.0, 0.0, 0.0]
        # the latest `window_size` values, as a ring once full (`_window_at`: the oldest):
        # unboxed, so a checkpoint copies them without touching a float object each
        self._window = array("d")
        self._window_at = 0
        # a size is judged as every windowed detector's is (see `registry.Method.check`)
        size = deque(maxlen=self.settings.window_size).maxlen
        self._window_size = sys.maxsize if size is None else size  # None: unbounded
        self._draws = 0
        self._block = np.empty(0)  # uniforms of draws _block_first.. (a cache)
        self._block_first = 0
        self._side = 0  # during an event: the CUSUM that fired (up, down, wider, narrower)
        self._return = 0.0  # ... and the CUSUM of "back at the baseline"

    @property
    def baseline_ready(self) -> bool:
        return self._sorted is not None

    def _learn(self, x: Any) -> None:
        self._baseline.append(float(x))
        if len(self._baseline) >= self.settings.baseline_size:
            self._calibrate()

    def _calibrate(self) -> None:
        ordered = sorted(self._baseline)
        n, allowance, ert, cache = (
            len(ordered), self.allowance, self.settings.expected_run_time, self.cache
        )

        def apply(threshold: float) -> None:
            self._learned(ordered)
            self._baseline, self._threshold = array("d"), threshold

        self._calibrate_with(lambda: rank_threshold(n, allowance, ert, cache), apply)

    def _reference_summary(self) -> Quantiles:
        return Quantiles()

    def _rebase(self, row: np.ndarray, size: int) -> None:
        """A phase's quantiles stand for its sample (see `references`); the threshold is
        the one for a baseline of `size` values, shared by every stream."""
        knots = np.sort(row[1:].astype(np.float64)).tolist()
        allowance, ert, cache = self.allowance, self.settings.expected_run_time, self.cache

        def apply(threshold: float) -> None:
            self._learned(knots)
            self._threshold = threshold

        self._calibrate_with(lambda: rank_threshold(size, allowance, ert, cache), apply)

    def _learned(self, ordered: list[float]) -> None:
        self._sorted = np.asarray(ordered, dtype=np.float64)
        # fixed from now on: not recomputed per scrape (none for an empty, hand-made state)
        self._baseline_stats = _stats(ordered) if ordered else {}

    def _uniforms(self, count: int) -> tuple[np.ndarray, int]:
        """Tie-breaking uniforms in (0, 1) for the next `count` draws (see `uniforms`), as
        an array and the offset where they start in it; the caller advances `_draws` by
        the number it used. Short runs share a block computed ahead, long ones get their
        own."""
        first = self._draws + 1
        if count > _BLOCK:
            return uniforms(self.settings.seed, first, count), 0
        offset = first - self._block_first
        if offset < 0 or offset + count > len(self._block):
            self._block, self._block_first, offset = (
                uniforms(self.settings.seed, first, _BLOCK), first, 0)
        return self._block, offset

    def normal_scores(self, values: Sequence[float]) -> list[float]:
        """z = Phi^-1(u) of each value's randomized rank against the baseline, drawing the
        next uniforms (not yet counted as used). One value (a one-record push) goes
        through the same numpy calls as numpy scalars, where a one-element array would
        cost several times more; the floats are the same."""
        ordered = self._sorted
        assert ordered is not None
        count = len(values)
        drawn, offset = self._uniforms(count)
        if count == 1:
            x: Any = values[0]
            u: Any = drawn[offset]
        else:
            x, u = np.asarray(values, dtype=np.float64), drawn[offset:offset + count]
        below = ordered.searchsorted(x, "left")  # (positional: cheaper for one value)
        ties = ordered.searchsorted(x, "right") - below
        scores = ndtri((below + u * (ties + 1)) / (len(ordered) + 1)).tolist()
        return scores if isinstance(scores, list) else [scores]

    def _observe_run(self, xs: Sequence[Any], start: int) -> int:
        """The run's normal scores in one numpy pass, then the CUSUMs and the hysteresis
        value by value, up to the first change of drift level (the uniforms drawn for
        values after it are not used: the next run draws them again)."""
        values = [float(x) for x in xs[start:]]
        taken = 0
        for value, z in zip(values, self.normal_scores(values), strict=True):
            taken += 1
            self._observations += 1
            if self._step(self._cusum(value, z)):
                break
        self._draws += taken
        return start + taken

    def _cusum(self, value: float, z: float) -> float:
        """Add one normal score to the four CUSUMs; the score (statistic / threshold)."""
        window = self._window
        if len(window) < self._window_size:
            window.append(value)
        else:
            at = self._window_at
            window[at] = value
            self._window_at = at + 1 if at + 1 < len(window) else 0
        spread = (z * z - 1.0) / _SQRT2
        k, sums = self.allowance, self._sums
        # Capped so that a change that reverts is recognized within about a window.
        cap = 2.0 * self._threshold
        sums[0] = min(max(0.0, sums[0] + z - k), cap)
        sums[1] = min(max(0.0, sums[1] - z - k), cap)
        sums[2] = min(max(0.0, sums[2] + spread - k), cap)
        sums[3] = min(max(0.0, sums[3] - spread - k), cap)
        if self._in_drift:  # log-likelihood ratio of N(0, 1) to N(b, 1) on the side that fired
            side, b = self._side, k * BACK_SHIFT
            y = z if side == 0 else -z if side == 1 else spread if side == 2 else -spread
            self._return = max(0.0, self._return + b * (b / 2.0 - y))
        return max(sums) / self._threshold

    def effect(self) -> float:
        """The window's change from the baseline in the floor's units: the larger relative
        change of the mean and of the p95 (what a user reads off a dashboard)."""
        if not self._window or not self._baseline_stats:
            return 0.0
        window = _stats(sorted(self._window))
        changes = [abs(window[stat] / base - 1.0) if base > 0 else
                   (math.inf if window[stat] > 0 else 0.0)
                   for stat, base in self._baseline_stats.items() if stat != "p50"]
        return max(changes)

    def _started(self) -> None:
        """Note the side that fired. The way back is tested against a shift of the
        allowance, the smallest the CUSUM is built to see, not the window's (an estimate
        taken at an alarm is biased away from the baseline, and testing against it would
        end a real but smaller change, then raise it again: flapping)."""
        self._side = int(np.argmax(self._sums))
        self._return = 0.0

    def _back_to_baseline(self) -> bool:
        """Wald's bound: under "still at the level", the CUSUM of the way back reaches
        log(ERT) no more often than once in ERT records."""
        return self._return >= math.log(self.settings.expected_run_time)

    def _rearm(self) -> None:
        self._sums = [0.0, 0.0, 0.0, 0.0]
        self._return = 0.0

    @property
    def direction(self) -> str:
        """Which of the four CUSUMs leads: up, down, wider, narrower."""
        return ("up", "down", "wider", "narrower")[int(np.argmax(self._sums))]

    def baseline_quantile(self, q: float) -> float | None:
        """The baseline's q-quantile (None while learning): evidence shows the replies
        beyond the baseline's p95 (or below its p5) while lengths drift."""
        if self._sorted is None or not len(self._sorted):
            return None
        n = len(self._sorted)
        return float(self._sorted[min(n - 1, max(0, int(q * n)))])

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        if self._baseline_stats:
            out["baseline"] = self._baseline_stats
        if self._window:
            out["window"] = _stats(sorted(self._window))  # (order does not matter)
        return out

    def _window_in_order(self) -> array:
        at = self._window_at
        return self._window[at:] + self._window[:at]

    def _snapshot_state(self) -> dict[str, Any]:
        return {
            "baseline": Growing(self._baseline),
            "sorted": one_row(self._sorted),
            "threshold": finite_or_none(self._threshold),
            "sums": self._sums,
            "window": np.frombuffer(self._window_in_order()),  # written without floats made
            "draws": self._draws,
            "event": [self._side, self._return],
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        self._baseline = values_of(state["baseline"])
        ordered = the_row(state["sorted"])
        if ordered is not None:
            self._learned(ordered.tolist())
        self._threshold = from_stored(state["threshold"])
        if "event" not in state and self._sorted is not None:  # saved before the guarantee
            log.info("rank CUSUM threshold simulated again for the per-stream guarantee "
                     "(state saved by an older version)")
            self._threshold = rank_threshold(len(self._sorted), self.allowance,
                                             self.settings.expected_run_time, self.cache)
        self._sums = list(state["sums"])
        window = list(state["window"])
        window = window[max(0, len(window) - self._window_size):]
        self._window, self._window_at = array("d", window), 0
        self._draws = int(state["draws"])
        side, back = state.get("event", (0, 0.0))
        self._side, self._return = int(side), float(back)


def uniforms(seed: int, first: int, count: int) -> np.ndarray:
    """Uniforms in (0, 1) of draws `first`.. `first + count - 1`: splitmix64 of the draw
    counter (plus the seed), so a snapshot is just the counter."""
    z = (np.arange(first, first + count, dtype=np.uint64) + np.uint64(seed & _MASK)) * _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return (((z ^ (z >> _S31)) >> _S11).astype(np.float64) + 0.5) / 9007199254740992.0


def _stats(ordered: Sequence[float]) -> dict[str, float]:
    n = len(ordered)
    return {
        "mean": sum(ordered) / n,
        "p50": ordered[(n - 1) // 2],
        "p95": ordered[min(n - 1, int(0.95 * n))],
    }
