"""The online MMD's threshold, simulated per stream with a guarantee per stream.

The statistic (see `embedding_mmd`) is |ewma - m|^2, m the baseline mean learned from n
records. That m is off the true mean by an offset of about Σ/n, and the false-alarm rate of
*this* stream's chart depends on that offset. A threshold calibrated on average over the
baselines a stream could have learned (each simulated path with its own bootstrap baseline,
as before) holds on average, but leaves the streams with unlucky baselines well short of the
expected run time. Here, in the spirit of Gandy and Kvaløy (2013, guaranteed conditional
performance of control charts via bootstrap), the threshold is the one the GUARANTEE (90th)
percentile baseline needs, so on about 9 of 10 streams the mean run length from rest is at least
`expected_run_time`.

Bootstrap world: the pool (the baseline's features, each row standing for `counts[i]`
records) is the truth; CHART_DRAWS means of n draws from it are the baselines one could
have learned. Rather than simulating a threshold for each (a full bootstrap), the paths use
ONE chart mean, the draw at rank GUARANTEE by `_badness`, start at it (from rest, as the
detector re-arms) and draw their data from the pool: one simulation.
"""

from __future__ import annotations

import numpy as np

from exporter.detectors.base import DetectorSettings
from exporter.detectors.calibration import (
    CHECKPOINTS,
    GUARANTEE,
    Plan,
    plan,
    seeded,
    threshold_for_run_length,
)

CHART_DRAWS = 128  # bootstrap baseline means; the chart's is the one at rank GUARANTEE
PATH_STEPS = 1_100_000  # simulated records per calibration, at most (most of its cost)
# 1,024 samples of the EWMA's no-change noise, 100 records (one time constant at the default
# window) apart, for `_badness`: about 13% of the simulation's cost
PILOT_PATHS, PILOT_BURN_IN, PILOT_EVERY, PILOT_SAMPLES = 128, 300, 100, 8
BADNESS_QUANTILE = 0.98


def simulate_null(
    pool: np.ndarray, counts: np.ndarray, n: int, weight: float, settings: DetectorSettings
) -> tuple[float, float, float]:
    """(threshold, median no-change distance, release level) for a baseline of `n`
    records whose features `pool` holds, row i standing for `counts[i]` records. Pure, so
    it can run on another thread."""
    how = plan(settings.expected_run_time)
    rng = seeded("embedding_mmd", "conditional", n, settings.window_size,
                 settings.expected_run_time, pool.sum(), counts.sum(), GUARANTEE)
    # small products by einsum, not BLAS: a fixed order of sums, and no thread pool to wake
    share = counts / counts.sum()
    centre = np.einsum("k,kf->f", share, pool)
    offsets = np.einsum("dk,kf->df", rng.multinomial(n, share, size=CHART_DRAWS), pool) / n
    offsets -= centre
    # Offset coordinates: d = ewma - chart mean; a record moves d to (1 - w) d + w (phi - m).
    noise = (weight * (pool - centre)).astype(np.float32)
    badness = _badness(offsets, _noise_samples(noise, counts, 1.0 - weight, rng))
    offset = offsets[np.argsort(badness)[int(GUARANTEE * (CHART_DRAWS - 1))]]
    steps = noise - np.float32(weight) * offset.astype(np.float32)
    paths = max(1, min(how.paths, PATH_STEPS // how.length))
    running, current = _running_maxima(steps, counts, 1.0 - weight, paths, how.length, rng)
    # A baseline of identical outputs has a null distance of 0; the floor makes a
    # handful of different outputs (not a single one) count as drift there.
    threshold = max(
        threshold_for_run_length(running, Plan(paths, how.length, settings.expected_run_time)),
        4.0 * weight * weight,
    )
    # The statistic is a squared distance: without change it rests well above 0, so an
    # episode ends when the score is back below what 90% of no-change records show.
    release = min(0.9, max(0.5, float(np.quantile(current, 0.9)) / threshold))
    return threshold, float(np.median(current)), release


def _badness(offsets: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """How far each chart-mean offset pushes up the upper tail of the statistic: the
    BADNESS_QUANTILE of |z - offset|^2 over samples of the EWMA's no-change noise z (its
    offset from the true mean). Empirical rather than from moments, because the sign of an
    offset matters when the data are skewed: on a near-constant stream a baseline that saw
    fewer of the rare outputs than their true share is the dangerous one (each rare output
    then pushes the EWMA straight away from it), one that saw more is safe, and a measure
    from the mean and variance of |z - offset|^2 (symmetric in the offset) picked the safe
    one. Trials (30 offsets per stream, a threshold simulated for each with common random
    numbers; rank correlation with that order): near-constant streams 0.99 and 0.99 (the
    moment measure 0.20 and -0.04), topic-mix streams 0.87-0.94 (moments 0.92-0.96)."""
    cross = np.einsum("kf,df->kd", samples, offsets)
    squared = np.einsum("kf,kf->k", samples, samples)[:, None] - 2.0 * cross
    squared += np.einsum("df,df->d", offsets, offsets)[None, :]
    return np.quantile(squared, BADNESS_QUANTILE, axis=0)


def _draws(rng: np.random.Generator, counts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rows of the pool, row i with probability proportional to counts[i]."""
    total = int(counts.sum())
    picks = rng.integers(total, size=shape, dtype=np.int64)
    if total == len(counts):  # a record per row
        return picks
    return np.searchsorted(np.cumsum(counts), picks, side="right")


def _noise_samples(
    noise: np.ndarray, counts: np.ndarray, decay: float, rng: np.random.Generator
) -> np.ndarray:
    """Samples of the EWMA's no-change offset from the pool mean, in its stationary state
    (PILOT_PATHS short paths, read every PILOT_EVERY records after PILOT_BURN_IN)."""
    z = np.zeros((PILOT_PATHS, noise.shape[1]), dtype=np.float32)
    samples, factor = [], np.float32(decay)
    picks = _draws(rng, counts, (PILOT_BURN_IN + PILOT_EVERY * PILOT_SAMPLES, PILOT_PATHS))
    for t, row in enumerate(picks, start=1):
        z *= factor
        z += noise[row]
        if t > PILOT_BURN_IN and t % PILOT_EVERY == 0:
            samples.append(z.copy())
    return np.concatenate(samples).astype(np.float64)


def _running_maxima(
    steps: np.ndarray, counts: np.ndarray, decay: float, paths: int, length: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Each path's running maximum of |d|^2 at the CHECKPOINTS, and |d|^2 after the last
    record, for d_0 = 0, d_t = decay d_(t-1) + steps[i_t], P(i_t = i) ~ counts[i]: per
    record a scale, a gather-add and a squared norm over all paths, in float32 (a threshold
    needs a few digits; float32 halves the memory traffic)."""
    d = np.zeros((paths, steps.shape[1]), dtype=np.float32)
    maxima, current = np.zeros(paths, dtype=np.float32), np.empty(paths, dtype=np.float32)
    factor, running = np.float32(decay), []
    for _ in range(CHECKPOINTS):
        for row in _draws(rng, counts, (length // CHECKPOINTS, paths)):
            d *= factor
            d += steps[row]
            np.einsum("ij,ij->i", d, d, out=current)
            np.maximum(maxima, current, out=maxima)
        running.append(maxima.astype(np.float64))
    return np.stack(running), current.astype(np.float64)
