"""Rank CUSUM for a univariate signal with any distribution (output tokens).

Each live value is turned into its randomized rank against the baseline
sample (a probability integral transform: u in (0, 1), uniform under no
change whatever the distribution, ties in integer counts broken at random),
then into a normal score z = Phi^-1(u). Four one-sided CUSUMs watch z for a
shift up or down (answers got longer or shorter) and (z^2 - 1)/sqrt(2) for
a spread that grew or shrank. Because only ranks enter, the statistic is
distribution-free: one simulation calibrates every stream, heavy tails do no
harm, and rescaling the input (tokens vs characters) changes nothing.

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

import math
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import ndtri

from exporter.detectors.base import Detector, DetectorSettings, finite_or_none, from_stored
from exporter.detectors.calibration import (
    CalibrationCache,
    Plan,
    plan,
    seeded,
    threshold_for_run_length,
)

DEFAULT_ALLOWANCE = 0.2  # CUSUM reference value k, in standard-normal units (see docs)
_SQRT2 = math.sqrt(2.0)
_MASK = (1 << 64) - 1


def simulate_maxima(n: int, allowance: float, how: Plan,
                    rng: np.random.Generator) -> np.ndarray:
    """Running maxima (at the plan's checkpoints) of the four-sided rank CUSUM on uniform
    data, each path with its own baseline."""
    paths, length = how.paths, how.length
    z = np.empty((paths, length))
    for p in range(paths):
        baseline = np.sort(rng.random(n))
        below = np.searchsorted(baseline, rng.random(length))
        z[p] = ndtri((below + rng.random(length)) / (n + 1))
    spread = (z * z - 1.0) / _SQRT2
    sums = np.zeros((4, paths))
    maxima = np.zeros(paths)
    running = []
    for t in range(length):
        zt, st = z[:, t], spread[:, t]
        np.maximum(0.0, sums[0] + zt - allowance, out=sums[0])
        np.maximum(0.0, sums[1] - zt - allowance, out=sums[1])
        np.maximum(0.0, sums[2] + st - allowance, out=sums[2])
        np.maximum(0.0, sums[3] - st - allowance, out=sums[3])
        np.maximum(maxima, sums.max(axis=0), out=maxima)
        if how.is_checkpoint(t):
            running.append(maxima.copy())
    return np.stack(running)


def rank_threshold(n: int, allowance: float, expected_run_time: int,
                   cache: CalibrationCache) -> float:
    def compute() -> float:
        how = plan(expected_run_time)
        rng = seeded("rank_cusum", n, allowance, expected_run_time)
        running = simulate_maxima(n, allowance, how, rng)
        return max(threshold_for_run_length(running, how), 1.0)

    return cache.get(("rank_cusum", n, allowance, expected_run_time), compute)


class RankCusum(Detector):
    kind = "rank_cusum"

    def __init__(self, settings: DetectorSettings, cache: CalibrationCache,
                 allowance: float = DEFAULT_ALLOWANCE) -> None:
        if not isinstance(allowance, int | float) or not 0.0 <= allowance < 2.0:
            raise ValueError(f"allowance must be a number in [0, 2), got {allowance!r}")
        self.cache = cache
        self.allowance = float(allowance)
        super().__init__(settings)

    def _reset(self) -> None:
        super()._reset()
        # learning: doubles in an array, a third of a list of floats (it peaks with every
        # other baseline sample); learned: a list, which bisect reads faster
        self._baseline = array("d")
        self._sorted: list[float] | None = None
        self._threshold = math.inf
        self._sums = [0.0, 0.0, 0.0, 0.0]
        self._window: deque[float] = deque(maxlen=self.settings.window_size)
        self._draws = 0

    @property
    def baseline_ready(self) -> bool:
        return self._sorted is not None

    def _learn(self, x: Any) -> None:
        self._baseline.append(float(x))
        if len(self._baseline) >= self.settings.baseline_size:
            ordered = sorted(self._baseline)
            n, allowance, ert, cache = (
                len(ordered), self.allowance, self.settings.expected_run_time, self.cache
            )

            def apply(threshold: float) -> None:
                self._sorted, self._baseline, self._threshold = ordered, array("d"), threshold

            self._calibrate_with(lambda: rank_threshold(n, allowance, ert, cache), apply)

    def _uniform(self) -> float:
        """Tie-breaking uniform from a counter (splitmix64), so a snapshot is just the counter."""
        self._draws += 1
        z = (self.settings.seed * 0x9E3779B97F4A7C15 + self._draws * 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return (((z ^ (z >> 31)) >> 11) + 0.5) / 9007199254740992.0  # in (0, 1), never 0

    def normal_score(self, x: float) -> float:
        assert self._sorted is not None
        below = bisect_left(self._sorted, x)
        ties = bisect_right(self._sorted, x, lo=below) - below
        u = (below + self._uniform() * (ties + 1)) / (len(self._sorted) + 1)
        return float(ndtri(u))

    def _observe(self, x: Any) -> float:
        value = float(x)
        self._window.append(value)
        z = self.normal_score(value)
        spread = (z * z - 1.0) / _SQRT2
        k, sums = self.allowance, self._sums
        sums[0] = max(0.0, sums[0] + z - k)
        sums[1] = max(0.0, sums[1] - z - k)
        sums[2] = max(0.0, sums[2] + spread - k)
        sums[3] = max(0.0, sums[3] - spread - k)
        # Capped so that a change that reverts is recognized within about a window.
        cap = 2.0 * self._threshold
        for i in range(4):
            sums[i] = min(sums[i], cap)
        return max(sums) / self._threshold

    def _rearm(self) -> None:
        self._sums = [0.0, 0.0, 0.0, 0.0]

    @property
    def direction(self) -> str:
        """Which of the four CUSUMs leads: up, down, wider, narrower."""
        return ("up", "down", "wider", "narrower")[int(np.argmax(self._sums))]

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        if self._sorted:
            out["baseline"] = _stats(self._sorted)
        if self._window:
            out["window"] = _stats(sorted(self._window))
        return out

    def _snapshot_state(self) -> dict[str, Any]:
        return {
            "baseline": self._baseline.tolist(),
            "sorted": self._sorted,
            "threshold": finite_or_none(self._threshold),
            "sums": self._sums,
            "window": list(self._window),
            "draws": self._draws,
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        self._baseline = array("d", state["baseline"])
        self._sorted = None if state["sorted"] is None else [float(v) for v in state["sorted"]]
        self._threshold = from_stored(state["threshold"])
        self._sums = list(state["sums"])
        self._window.extend(state["window"])
        self._draws = int(state["draws"])


def _stats(ordered: Sequence[float]) -> dict[str, float]:
    n = len(ordered)
    return {
        "mean": sum(ordered) / n,
        "p50": ordered[(n - 1) // 2],
        "p95": ordered[min(n - 1, int(0.95 * n))],
    }
