"""Edges of the batched detector path that a review found broken (now fixed): an episode
that ends on a run's last value, one record at a time through a stream, a batch of refused
embeddings, a hand-made state with an empty baseline. One `update` at a time is the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from exporter.detectors import DetectorFactory
from exporter.detectors.embedding_mmd import EmbeddingMmd
from exporter.signals.measure import Measurements
from exporter.streams.stream_detectors import StreamDetectors
from tests.test_detector_runs import episodes
from tests.test_detectors import SETTINGS


def _first_episode_end(values: list) -> int:
    """Index of the value whose `update` ends the first drift episode."""
    detector = EmbeddingMmd(SETTINGS)
    for index, x in enumerate(values):
        was = detector.drift_detected
        detector.update(x)
        if was and not detector.drift_detected:
            return index
    raise AssertionError("no drift episode ended")


def _embedding_only(vector: np.ndarray) -> Measurements:
    return Measurements(10, "usage", "none", None, None, None, False, None, vector, "user")


def test_mmd_episode_ending_on_the_last_value_of_a_run_rearms() -> None:
    """The end of an episode on a run's last value re-arms the EWMA (it once kept the
    run's last EWMA instead)."""
    values = episodes("embedding_mmd", 1)
    end = _first_episode_end(values)
    alone, batched = EmbeddingMmd(SETTINGS), EmbeddingMmd(SETTINGS)
    for x in values[: end + 1]:
        alone.update(x)
    position = 0
    while position <= end:
        position = batched.update_run(values[: end + 1], position)
    assert not batched.drift_detected
    assert batched.snapshot() == alone.snapshot()
    assert batched.summary() == alone.summary()  # window mmd2 is 0.0 right after re-arming


def test_one_record_at_a_time_through_a_stream_gives_the_detectors_scores() -> None:
    """A one-record batch (a one-record push, a quiet stream) is a run of one value: every
    episode end is on a run's last value."""
    factory = DetectorFactory.from_config(
        {"baseline_size": SETTINGS.baseline_size, "window_size": SETTINGS.window_size,
         "expected_run_time": SETTINGS.expected_run_time}
    )
    values = episodes("embedding_mmd", 1)
    end = _first_episode_end(values)
    reference = EmbeddingMmd(SETTINGS)
    stream = StreamDetectors.create(factory)
    for x in values[: end + 20]:
        reference.update(x)
        stream.update(_embedding_only(x))
        assert stream.detectors["embedding"].score == reference.score


@pytest.mark.parametrize("count", [300])
def test_a_batch_of_refused_embeddings_is_not_restacked_per_record(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a stream's embedding dimension changes (a new embedding model) every vector is
    refused: each must cost itself, not a re-read of the rest of the batch (which made a
    batch quadratic: 2,000 records of 3,072 floats took 11 s)."""
    factory = DetectorFactory.from_config(
        {"baseline_size": 200, "window_size": 50, "expected_run_time": 5000}
    )
    stream = StreamDetectors.create(factory)
    rng = np.random.default_rng(0)
    for vector in rng.normal(size=(250, 16)):
        stream.update(_embedding_only(vector))
    assert stream.detectors["embedding"].baseline_ready
    stacked = []
    original = EmbeddingMmd._vectors

    def counting(self: EmbeddingMmd, xs: list, start: int) -> np.ndarray:
        try:
            rows = original(self, xs, start)
        except ValueError:
            stacked.append(1)  # refused at the first vector it read
            raise
        stacked.append(len(rows))
        return rows

    monkeypatch.setattr(EmbeddingMmd, "_vectors", counting)
    stream.update_many([_embedding_only(v) for v in rng.normal(size=(count, 32))])
    assert stream.errors["embedding"] == count
    assert sum(stacked) <= 4 * count, f"{sum(stacked)} vectors stacked for {count} records"


def test_a_state_with_an_empty_sorted_baseline_still_restores() -> None:
    """A hand-made or corrupt state with an empty learned baseline restores, as it did
    before the baseline became an array (a ZeroDivisionError would escape the state load)."""
    from exporter.detectors.base import DetectorSettings
    from exporter.detectors.calibration import CalibrationCache
    from exporter.detectors.rank_cusum import RankCusum

    saved = RankCusum(DetectorSettings(), CalibrationCache()).snapshot()
    saved["state"]["sorted"], saved["state"]["threshold"] = [], 5.0
    restored = RankCusum(DetectorSettings(), CalibrationCache())
    restored.restore(saved)
    restored.update(3.0)
    assert restored.baseline_ready and "baseline" not in restored.summary()
