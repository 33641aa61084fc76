"""Thresholds that give a chosen expected run time (ERT) between false alarms.

Method (documented in docs/detection.md): simulate the detector's statistic
under *no change* on many independent paths of length L, take each path's
maximum, and pick the threshold h with

    P(max over L records < h) = exp(-L / ERT)

i.e. the run length to a false alarm is treated as memoryless (exponential)
with mean ERT, which holds for CUSUM- and EWMA-type statistics once past a
short start-up transient. The simulated paths include the uncertainty of the
baseline itself (each path draws its own baseline), so the calibration holds
on average over the baselines a stream could have learned, not only for the
one it did; this is the point where naive bootstrap-from-the-baseline
calibration is optimistic. Cobb et al. (AISTATS 2022) calibrate windowed
statistics for a constant false-alarm hazard; we target the same ERT with
cheaper O(1)-state statistics.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

PATH_LENGTH = 4000
MIN_PATHS = 1000
MAX_PATHS = 8000
EXCEEDANCES_WANTED = 40


def plan(expected_run_time: int) -> tuple[int, int, float]:
    """(paths, path length, quantile level) for a target ERT.

    Short paths for small ERTs keep the quantile away from the extreme low
    tail; more paths for large ERTs keep enough exceedances above it.
    """
    length = int(min(PATH_LENGTH, max(200, 2 * expected_run_time)))
    level = math.exp(-length / expected_run_time)
    tail = max(1e-9, min(level, 1.0 - level))
    paths = int(min(MAX_PATHS, max(MIN_PATHS, EXCEEDANCES_WANTED / tail)))
    return paths, length, level


def threshold_from_maxima(maxima: np.ndarray, level: float) -> float:
    return float(np.quantile(maxima, level, method="linear"))


@dataclass
class CalibrationCache:
    """Thresholds by parameter key. Owned by the pipeline; calibration is pure, so
    streams with equal parameters (every rank detector, Bernoulli streams with
    the same baseline count) share one simulation."""

    _values: dict[tuple[object, ...], float] = field(default_factory=dict)
    simulations: int = 0

    def get(self, key: tuple[object, ...], compute: Callable[[], float]) -> float:
        value = self._values.get(key)
        if value is None:
            value = compute()
            self._values[key] = value
            self.simulations += 1
        return value


def seeded(*parts: object) -> np.random.Generator:
    """A generator seeded from the calibration key (never the salted `hash()`), so
    thresholds are identical across processes and restarts."""
    return np.random.Generator(np.random.PCG64(zlib.crc32(repr(parts).encode())))
