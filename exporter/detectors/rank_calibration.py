"""The rank CUSUM's threshold: simulated once per process and parameters, for every stream.

Ranks make the statistic distribution-free, but not free of the baseline's
luck: a live value falls between baseline values j and j+1 with the
probability of that spacing, so a baseline that happened to fall a little low
makes every live value look a little high, for good. The spacings of n
uniforms carry all of it, so the threshold is simulated against one baseline
as unlucky as the GUARANTEE quantile of random ones: on that share of streams
the mean run length between false events is at least the expected run time.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri

from exporter.detectors.calibration import (
    GUARANTEE,
    CalibrationCache,
    Plan,
    plan,
    seeded,
    threshold_for_run_length,
)

_SQRT2 = math.sqrt(2.0)
CANDIDATES = 400  # random baselines the adverse one is picked from


def _siegmund_hazard(drift: np.ndarray, variance: np.ndarray, h: float) -> np.ndarray:
    """1 / mean run length of a CUSUM with increments of this (negative) mean and variance
    at threshold h (Siegmund's approximation, with its 1.166 sigma overshoot)."""
    theta = -2.0 * drift / variance
    b = theta * (h + 1.166 * np.sqrt(variance))
    return np.asarray(theta * theta * variance / 2.0 / (np.expm1(b) - b))


def adverse_baseline(n: int, allowance: float, expected_run_time: int,
                     rng: np.random.Generator) -> np.ndarray:
    """A sorted baseline of n uniforms (a baseline's values, as probabilities) whose
    predicted false-alarm hazard is at the GUARANTEE quantile of CANDIDATES random ones.

    A live value falls between baseline values j and j+1 with the probability of that
    spacing, so a baseline fixes the mean and variance of the live normal scores and of
    their spread term, hence each CUSUM's drift; Siegmund's approximation turns drifts
    into a hazard, and only its ordering is used (the threshold is then simulated)."""
    grid = (np.arange(8) + 0.5) / 8  # the tie-breaking uniform, integrated on a grid
    z = ndtri((np.arange(n + 1)[:, None] + grid[None, :]) / (n + 1))
    moments = np.stack([z.mean(1), (z ** 2).mean(1), (z ** 4).mean(1)])  # (3, n + 1)
    candidates = np.sort(rng.random((CANDIDATES, n)), axis=1)
    edges = np.zeros((CANDIDATES, n + 2))
    edges[:, 1:-1], edges[:, -1] = candidates, 1.0
    m1, m2, m4 = (np.diff(edges, axis=1) @ moments.T).T
    spread_mean = (m2 - 1.0) / _SQRT2
    variances = np.stack([m2 - m1 * m1] * 2 + [(m4 - m2 * m2) / 2.0] * 2)
    drifts = np.stack([m1, -m1, spread_mean, -spread_mean]) - allowance
    reference = _reference_threshold(allowance, expected_run_time)
    hazard = _siegmund_hazard(drifts, variances, reference).sum(axis=0)
    order = np.argsort(hazard)
    return np.asarray(candidates[order[int(GUARANTEE * (CANDIDATES - 1))]])


def _reference_threshold(allowance: float, expected_run_time: int) -> float:
    """The threshold Siegmund's approximation gives four unit-variance CUSUMs at rest."""
    low, high = 0.0, 1000.0
    drift, variance = np.array([-allowance]), np.array([1.0])
    for _ in range(60):
        middle = (low + high) / 2
        if 4.0 * float(_siegmund_hazard(drift, variance, middle)[0]) > 1.0 / expected_run_time:
            low = middle
        else:
            high = middle
    return high


def simulate_maxima(n: int, allowance: float, how: Plan, rng: np.random.Generator,
                    baseline: np.ndarray | None = None) -> np.ndarray:
    """Running maxima (at the plan's checkpoints) of the four-sided rank CUSUM on uniform
    data: every path against `baseline` (sorted uniforms), or each path with its own."""
    paths, length = how.paths, how.length
    z = np.empty((paths, length))
    for p in range(paths):
        against = np.sort(rng.random(n)) if baseline is None else baseline
        below = np.searchsorted(against, rng.random(length))
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
    """The threshold for baselines of n values: the mean run length from rest is the
    expected run time against the adverse baseline (so on GUARANTEE of streams, at least
    that). One simulation per process and parameters, shared by every stream."""
    def compute() -> float:
        how = plan(expected_run_time)
        rng = seeded("rank_cusum", n, allowance, expected_run_time, GUARANTEE)
        baseline = adverse_baseline(n, allowance, expected_run_time, rng)
        running = simulate_maxima(n, allowance, how, rng, baseline)
        return max(threshold_for_run_length(running, how), 1.0)

    return cache.get(("rank_cusum", n, allowance, expected_run_time, GUARANTEE), compute)
