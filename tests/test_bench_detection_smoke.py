"""Smoke test of the detection benchmark (benchmarks/bench_detection.py) on tiny sizes, so that
it keeps running as the detectors change. Figures are the benchmark's job, not this test's."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_detection as bench
import detection_streams as streams

TINY = bench.Config(
    seeds=2, null_length=1500, slow_seeds=1, slow_null_length=200, change_runs=2,
    slow_change_runs=1, calibration_length=1500, calibration_length_embedding=400,
    pool_size=40, cost_records=300, change_at=1400, horizon=600, repeats=1,
)


def test_streams_have_the_promised_shape() -> None:
    tokens = streams.values("tokens", "null", 3, 5000)
    assert tokens.shape == (5000,) and tokens.min() >= 1 and np.all(tokens == np.rint(tokens))
    assert np.array_equal(streams.values("tokens_x4", "null", 3, 5000), 4 * tokens)
    changed = streams.values("tokens", "null", 3, 5000, change_at=2500)
    assert np.median(changed[2500:]) / np.median(changed[:2500]) == pytest.approx(1.3, rel=0.1)
    heavy = streams.values("tokens_heavy", "null", 3, 20_000)
    assert heavy.max() > 20 * np.median(heavy)
    refusal = streams.values("refusal", "null", 3, 40_000, change_at=20_000)
    assert refusal.dtype == bool
    assert refusal[:20_000].mean() == pytest.approx(0.02, abs=0.005)
    assert refusal[20_000:].mean() == pytest.approx(0.06, abs=0.01)
    vectors = streams.values("embedding", "null", 3, 50, pool_size=TINY.pool_size)
    assert vectors.shape == (50, streams.EMBEDDING_DIMENSION)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    scalar = streams.scalar_for_river("embedding", vectors, 30)
    assert scalar.shape == (50,)


def test_statistics_helpers() -> None:
    assert bench.nearest_rank([3.0, 1.0, 2.0, math.inf], 0.5) == 2.0
    assert math.isinf(bench.nearest_rank([1.0, math.inf], 0.9))
    low, high = bench.poisson_interval(0)
    assert low == 0.0 and high == pytest.approx(3.689, abs=0.01)


def test_rank_detector_catches_doubled_lengths_fast() -> None:
    doubled = dataclasses.replace(streams.SPECS["tokens"], factor=2.0)
    for seed in range(3):
        rng = streams.rng_for("tokens", "smoke", seed)
        data = streams.token_lengths(doubled, rng, 3000, change_at=2000).tolist()
        delay, pre = bench.run_change(bench.make_ours("tokens", TINY, 100_000), data, 2000)
        assert pre == 0
        assert delay is not None and delay <= 300


def test_embedding_calibration_task_runs() -> None:
    out = bench.task_ours_unchanged("embedding", [0], TINY, bench.CALIBRATION_ERT,
                                    TINY.calibration_length_embedding, "calibration")
    assert out["records"] == TINY.calibration_length_embedding and out["streams"] == 1
    assert 0 < out["armed"] <= out["records"]


def test_tiny_benchmark_end_to_end() -> None:
    results = bench.run_benchmark(TINY, workers=1, keys=("tokens", "refusal"),
                                  calibration_keys=("tokens",), tokenizer=False)
    labels = {(row.key, row.detector, row.setting.split("=")[0]) for row in results.rows}
    assert ("tokens", "ours: rank CUSUM", "expected_run_time") in labels
    assert ("refusal", "river DDM", "defaults") in labels
    assert ("refusal", "river KSWIN", "defaults") in labels
    assert ("tokens", "river PageHinkley", "threshold") in labels
    assert ("tokens", "river ADWIN", "delta") in labels
    for row in results.rows:
        assert row.records > 0 and row.streams > 0
        assert row.runs and all(pre >= 0 for _, pre in row.runs)
    assert [c["key"] for c in results.calibration] == ["tokens"]
    assert set(results.costs) == {"rank_cusum", "bernoulli_cusum"}
    text = bench.markdown(results)
    for heading in ("### False events and delay", "### Calibration", "### Cost"):
        assert heading in text
    assert text.count("| ours: ") == 2 + 1 + 2  # main rows, calibration row, cost rows
