"""Seeded streams for every detector method, shared by the detector test modules:
`CASES[name]` is (make a detector, stationary values, shifted values)."""

from __future__ import annotations

import numpy as np

from exporter.detectors import DetectorSettings
from exporter.detectors.bernoulli_cusum import BernoulliCusum
from exporter.detectors.calibration import CalibrationCache
from exporter.detectors.embedding_mmd import EmbeddingMmd
from exporter.detectors.rank_cusum import RankCusum
from exporter.detectors.river_adapter import BINARY, UNIVARIATE, RiverDetector

SETTINGS = DetectorSettings(expected_run_time=5000, baseline_size=200, window_size=50)
CACHE = CalibrationCache()


def tokens(rng, n, scale=1.0):
    return list(np.round(rng.lognormal(5.0, 0.5, n) * scale))


def flags(rng, n, p):
    return [bool(v) for v in rng.random(n) < p]


def vectors(rng, n, weights):
    centers = np.random.default_rng(0).normal(size=(3, 16))
    picks = rng.choice(3, size=n, p=weights)
    return list(centers[picks] + rng.normal(scale=1.2, size=(n, 16)))


# (name, factory, stationary generator, shifted generator)
CASES = {
    "rank_cusum": (lambda: RankCusum(SETTINGS, CACHE),
                   lambda r, n: tokens(r, n), lambda r, n: tokens(r, n, 1.6)),
    "bernoulli_cusum": (lambda: BernoulliCusum(SETTINGS, CACHE),
                        lambda r, n: flags(r, n, 0.1), lambda r, n: flags(r, n, 0.4)),
    "embedding_mmd": (lambda: EmbeddingMmd(SETTINGS),
                      lambda r, n: vectors(r, n, [1 / 3] * 3),
                      lambda r, n: vectors(r, n, [0.9, 0.05, 0.05])),
    **{f"river_{m}": ((lambda m=m: RiverDetector(SETTINGS, m)),
                      lambda r, n: tokens(r, n), lambda r, n: tokens(r, n, 3.0))
       for m in UNIVARIATE},
    **{f"river_{m}": ((lambda m=m: RiverDetector(SETTINGS, m)),
                      lambda r, n: flags(r, n, 0.05), lambda r, n: flags(r, n, 0.5))
       for m in BINARY},
}


def episodes(name: str, seed: int) -> list:
    """Stationary, shifted, stationary again, shifted again: events start and end."""
    _, stationary, shifted = CASES[name]
    rng = np.random.default_rng(seed)
    return stationary(rng, 900) + shifted(rng, 500) + stationary(rng, 1500) + shifted(rng, 400)
