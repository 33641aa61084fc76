"""Thresholds that give a chosen expected run time (ERT) between false alarms, per stream.

Method (documented in docs/detection.md): simulate the detector's statistic
under *no change* on many independent paths of length L, take each path's
maximum, and pick the threshold h with

    P(max over L records < h) = exp(-L / ERT)

i.e. the run length to a false alarm is treated as memoryless (exponential)
with mean ERT, which holds for CUSUM- and EWMA-type statistics once past a
short start-up transient.

A detector compares live records with a baseline it *learned*, and a learned
baseline is off by its sampling error: a stream whose 1,000-record baseline
happened to hold 2.8% refusals for a true 2% sees a lasting "change" that is
only that error. Averaging the simulation over baselines (each path drawing
its own) makes the ERT hold on average over streams while the unlucky ones
page again and again. So the simulations here are *conditional*, after Gandy
and Kvaløy (2013, guaranteed conditional performance via bootstrap): each
detector simulates against an adverse baseline, one that is worse than
GUARANTEE (90%) of the baselines a stream could have learned, so the mean run
length between false events is at least ERT on at least 9 streams in 10
(rank CUSUM: the baseline at that quantile of the predicted false-alarm
hazard; Bernoulli CUSUM: true rates at the ends of the 90% credible interval
of the learned rate; MMD: a bootstrap baseline mean at that quantile). The
price is a higher threshold, measured as detection delay in
benchmarks/results/detection.md.
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
# Share of streams whose mean run length between false events is at least the ERT.
GUARANTEE = 0.9


CHECKPOINTS = 16


@dataclass(frozen=True)
class Plan:
    """How to simulate: `paths` paths of `length` records; each path's running maximum is
    kept at CHECKPOINTS evenly spaced times (`checkpoint_times`)."""

    paths: int
    length: int
    expected_run_time: int

    @property
    def checkpoint_times(self) -> np.ndarray:
        return np.linspace(self.length / CHECKPOINTS, self.length, CHECKPOINTS).astype(int)

    def is_checkpoint(self, t: int) -> bool:
        """True after record t (0-based) when a checkpoint falls there."""
        return (t + 1) % (self.length // CHECKPOINTS) == 0 and (t + 1) // (
            self.length // CHECKPOINTS
        ) <= CHECKPOINTS


def plan(expected_run_time: int) -> Plan:
    """Paths long enough to see alarms, and enough of them to estimate the tail."""
    length = int(min(PATH_LENGTH, max(CHECKPOINTS * 16, 2 * expected_run_time)))
    length -= length % CHECKPOINTS
    survival = math.exp(-length / expected_run_time)
    tail = max(1e-9, min(survival, 1.0 - survival))
    paths = int(min(MAX_PATHS, max(MIN_PATHS, EXCEEDANCES_WANTED / tail)))
    return Plan(paths=paths, length=length, expected_run_time=expected_run_time)


def mean_run_length(survival: np.ndarray, times: np.ndarray) -> float:
    """E[run length] from the survival curve P(no alarm by t) at `times`, with an
    exponential tail beyond the last time at the hazard seen over the second half."""
    curve = np.concatenate([[1.0], survival])
    grid = np.concatenate([[0], times])
    inside = float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(grid)))
    half = len(times) // 2
    last, middle = survival[-1], survival[half - 1]
    if last <= 0.0:
        return inside
    if middle <= last:
        return math.inf
    hazard = math.log(middle / last) / (times[-1] - times[half - 1])
    return inside + last / hazard


def threshold_for_run_length(running_maxima: np.ndarray, how: Plan) -> float:
    """The threshold whose mean run length *from rest* is the expected run time.

    `running_maxima` has one row per checkpoint: each path's maximum so far. From rest
    is how detectors start and re-arm (a CUSUM at 0, an EWMA at the baseline mean), so
    the start-up transient is part of what the user waits between false events.
    """
    times = how.checkpoint_times
    candidates = np.unique(running_maxima[-1])
    low, high = 0, len(candidates) - 1
    while low < high:  # mean run length grows with the threshold
        middle = (low + high) // 2
        survival = (running_maxima < candidates[middle]).mean(axis=1)
        if mean_run_length(survival, times) >= how.expected_run_time:
            high = middle
        else:
            low = middle + 1
    return float(candidates[low])


@dataclass
class CalibrationCache:
    """Thresholds by parameter key. Owned by the pipeline; calibration is pure, so
    streams with equal parameters (every rank detector, Bernoulli streams with
    the same baseline count) share one simulation."""

    _values: dict[tuple[object, ...], float] = field(default_factory=dict)

    def get(self, key: tuple[object, ...], compute: Callable[[], float]) -> float:
        value = self._values.get(key)
        if value is None:
            value = compute()
            self._values[key] = value
        return value


def seeded(*parts: object) -> np.random.Generator:
    """A generator seeded from the calibration key (never the salted `hash()`), so
    thresholds are identical across processes and restarts."""
    return np.random.Generator(np.random.PCG64(zlib.crc32(repr(parts).encode())))
