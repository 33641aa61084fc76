"""Smoke test of the detection benchmark (benchmarks/bench_detection*.py) on tiny sizes, so that
it keeps running as the detectors change. Figures are the benchmark's job, not this test's."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_detection
import bench_detection_averages as averages
import bench_detection_common as common
import bench_detection_runs as bench
import bench_detection_trust as trust
import bench_detection_trust_report as trust_report
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
    assert common.nearest_rank([3.0, 1.0, 2.0, math.inf], 0.5) == 2.0
    assert math.isinf(common.nearest_rank([1.0, math.inf], 0.9))
    low, high = common.poisson_interval(0)
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
    results = averages.run_benchmark(TINY, workers=1, keys=("tokens", "refusal"),
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
    text = averages.markdown(results)
    for heading in ("### False events and delay", "### Calibration", "### Cost"):
        assert heading in text
    assert text.count("| ours: ") == 2 + 1 + 2  # main rows, calibration row, cost rows


# --- the per-stream (trust) section ------------------------------------------------------------
TINY_TRUST = trust.TrustConfig(streams=12, change_runs=2, river_runs=1, length=1500,
                               change_at=1200, after=800, river_horizon=300, pool_size=40)


def test_json_route_signals_share_their_records() -> None:
    lengths = streams.values("json_tokens", "null", 5, 200_000, change_at=100_000)
    invalid = streams.values("json_validity", "null", 5, 200_000, change_at=100_000)
    assert np.all(lengths[invalid] >= 13) and np.all(invalid[lengths >= 14])
    assert invalid[:100_000].mean() == pytest.approx(0.01, abs=0.002)
    assert invalid[100_000:].mean() == pytest.approx(0.05, abs=0.003)
    shift = lengths[100_000:].mean() / lengths[:100_000].mean() - 1
    assert shift == pytest.approx(0.008, abs=0.002)
    const = streams.values("tokens_const", "null", 5, 100_000)
    assert set(np.unique(const).tolist()) == {11.0, 12.0, 13.0} and np.mean(const == 12) > 0.98


def test_blocks_apply_the_change_at_its_absolute_record() -> None:
    first = streams.blocks("refusal", "smoke", 1, change_at=15_000, size=10_000)
    second = streams.blocks("refusal", "smoke", 1, change_at=15_000, size=10_000)
    records = np.concatenate([next(first) for _ in range(4)])
    assert np.array_equal(records, np.concatenate([next(second) for _ in range(4)]))
    assert records[:15_000].mean() == pytest.approx(0.02, abs=0.006)
    assert records[15_000:].mean() == pytest.approx(0.06, abs=0.01)


def test_feed_sees_each_event_where_update_does() -> None:
    """`feed` (runs, blocks) must log the same event records as one update() per record."""
    factory = trust.DetectorFactory.from_config({"expected_run_time": 300})
    data = np.concatenate([block for _, block in zip(range(3), streams.blocks(
        "tokens_07", "smoke", 2, size=5000), strict=False)])
    one_by_one = factory.make("output_tokens")
    assert one_by_one is not None
    expected = []
    for i, x in enumerate(data.tolist()):
        before = one_by_one.events
        one_by_one.update(x)
        if one_by_one.events != before:
            expected.append(i)
    detector = factory.make("output_tokens")
    assert detector is not None
    fed = trust.feed(detector, "tokens_07", streams.blocks("tokens_07", "smoke", 2, size=5000),
                     lambda _baseline: len(data), 10_000)
    assert len(expected) >= 3 and fed.events == expected
    assert fed.baseline == 1000


def test_null_verdict_fails_a_bad_stream_or_group() -> None:
    def runs(events: list[int]) -> list[tuple[int, int, int]]:
        return [(seed, e, 1000) for seed, e in enumerate(events)]

    assert trust_report.null_row("refusal", runs([3] * 6 + [0] * 6))[1]
    assert not trust_report.null_row("refusal", runs([4] + [0] * 11))[1]
    assert not trust_report.null_row("refusal", runs([2] * 12))[1]
    assert not trust_report.null_row("refusal", runs([0] * 12 + [9] + [0] * 11))[1]


def test_tiny_trust_run_end_to_end() -> None:
    results = trust.run_trust(TINY_TRUST, workers=1, null_shapes=("tokens_const", "refusal_5"),
                              changes=("json_tokens", "json_validity"))
    assert [len(results.null[k]) for k in ("tokens_const", "refusal_5")] == [12, 12]
    assert all(0 < b <= 3000 for runs in results.null.values() for _, _, b in runs)
    runs = results.changes["json_validity"]
    assert [run.seed for run in runs] == [0, 1]
    assert all(run.delay is None or 1 <= run.delay <= TINY_TRUST.after for run in runs)
    assert set(results.river) == {("json_tokens", "adwin"), ("json_tokens", "page_hinkley"),
                                  ("json_validity", "adwin"), ("json_validity", "page_hinkley"),
                                  ("json_validity", "ddm"), ("json_validity", "eddm")}
    text = trust_report.markdown_trust(results, trust.CHANGES)
    for heading in ("### 1. False events per stream", "### 2. Flapping", "### 3. Detection delay",
                    "TUNING seeds", "Trust bars:"):
        assert heading in text
    assert text.count("| river ") == 6
    only = trust.run_trust(dataclasses.replace(TINY_TRUST, seed_base=1_000_000), workers=1,
                           signals=("refusal",), null_shapes=("tokens_const", "refusal_5"),
                           changes=("json_validity",))
    assert list(only.null) == ["refusal_5"] and not only.changes
    assert only.null["refusal_5"][0][0] == 1_000_000
    assert "HELD-OUT seeds (base 1,000,000" in trust_report.markdown_trust(only, trust.CHANGES)


def test_cli_refuses_streams_not_in_groups_of_12() -> None:
    with pytest.raises(SystemExit):
        bench_detection.main(["--trust", "--streams", "13"])
