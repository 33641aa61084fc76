"""States saved before per-stream calibration and the test for the way back restore: the rank
CUSUM's old (unconditional) threshold is simulated again with a logged reason, the Bernoulli
CUSUM's is always simulated again from its counts, and the event fields start at rest."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from exporter.detectors import DetectorSettings
from exporter.detectors.bernoulli_cusum import BernoulliCusum
from exporter.detectors.calibration import CalibrationCache
from exporter.detectors.rank_calibration import rank_threshold
from exporter.detectors.rank_cusum import RankCusum
from tests.state_helpers import as_saved_before, plain

SETTINGS = DetectorSettings(expected_run_time=2000, baseline_size=200, window_size=50)
CACHE = CalibrationCache()


def _old(snapshot: dict, *keys: str) -> dict:
    """A snapshot as the previous version wrote it to JSON: without the new state keys,
    learned arrays as flat lists (not rows), no calibration in progress."""
    snapshot = as_saved_before(snapshot)
    state = {k: v for k, v in snapshot["state"].items() if k not in keys}
    return {**{k: v for k, v in snapshot.items() if k not in keys}, "state": state}


def test_rank_state_of_the_previous_version_gets_the_per_stream_threshold(
        caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(1)
    detector = RankCusum(SETTINGS, CACHE)
    for x in rng.lognormal(5.0, 0.7, 400):
        detector.update(float(x))
    saved = _old(detector.snapshot(), "event", "gate_next")
    saved["state"]["threshold"] = 12.5  # what an unconditional simulation had stored
    restored = RankCusum(SETTINGS, CACHE)
    with caplog.at_level(logging.INFO, logger="exporter.detectors.rank_cusum"):
        restored.restore(saved)
    assert restored._threshold == rank_threshold(200, 0.2, 2000, CACHE) != 12.5
    assert "older version" in caplog.text
    for x in rng.lognormal(5.0, 0.7, 300):  # and it goes on like the original
        restored.update(float(x))
        detector.update(float(x))
    assert plain(restored.snapshot()) == plain(detector.snapshot())


def test_bernoulli_state_of_the_previous_version_restores_at_rest() -> None:
    rng = np.random.default_rng(2)
    detector = BernoulliCusum(SETTINGS, CACHE)
    for x in rng.random(400) < 0.05:
        detector.update(bool(x))
    restored = BernoulliCusum(SETTINGS, CACHE)
    restored.restore(_old(detector.snapshot(), "back", "gate_next"))
    assert plain(restored.snapshot()) == plain(detector.snapshot())
