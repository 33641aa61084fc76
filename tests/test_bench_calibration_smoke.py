"""Smoke test of the calibration benchmark (benchmarks/bench_calibration.py) on tiny sizes, so
it keeps running as the calibrations change. Figures are the benchmark's job, not this test's:
tiny baselines and a short expected run time keep every simulation cheap."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_calibration as bench
import calibration_storm as storm
import calibration_streams as streams

from exporter.detectors.registry import SIGNALS

TINY = {"baseline_size": 40, "expected_run_time": 200}


def test_streams_differ_and_extend_without_changing_what_came_before() -> None:
    shapes = streams.shapes(30, 0)
    assert len({s.mix for s in shapes}) == 30
    assert {s.lengths for s in shapes} == set(streams.LENGTH_SHAPES)
    assert all(0.01 <= s.refusal_rate <= 0.05 and 0.005 <= s.invalid_rate <= 0.03
               for s in shapes)
    first, again = streams.block(shapes[0], 0), streams.block(shapes[0], 0)
    assert (first.texts == again.texts).all() and (first.tokens == again.tokens).all()
    assert not (first.texts == streams.block(shapes[0], 1).texts).all()
    assert not (first.refused & first.invalid).any()
    assert len(streams.observations(shapes[0], "embedding", 0)) == streams.BLOCK
    assert len(streams.observations(shapes[0], "format_validity", 0)) == (
        streams.BLOCK - int(first.refused.sum()))


def test_cost_counts_every_simulation_of_every_stream() -> None:
    costs = bench.stream_costs(3, 0, TINY)
    assert sorted({c.signal for c in costs}) == sorted(SIGNALS)
    assert len(costs) == 3 * len(SIGNALS)
    for cost in costs:
        assert cost.jobs >= 1 and cost.observations >= TINY["baseline_size"]
        assert 0.0 < cost.calibration <= cost.total
    text = bench.cost_table(3, costs)
    assert "| **all signals** |" in text and "bar 0.1 s" in text


def test_replies_are_measured_as_the_benchmark_means_them(tmp_path: Path) -> None:
    config = storm.parse_config(storm.exporter_config(storm.StormConfig(), tmp_path / "x"))
    texts = storm.measured_texts(config)  # asserts refusal and validity of every reply
    needed = storm.records_needed(config, streams.shapes(1, 0)[0], texts)
    assert needed >= config.detectors.settings.baseline_size


@pytest.mark.e2e
def test_storm_on_the_real_exporter() -> None:
    result = storm.run_storm(storm.StormConfig(streams=4, detectors=TINY, timeout=60,
                                               scrape_gap=0.05, api_every=2),
                             progress=lambda _: None)
    assert result.accounted is not None and result.ready is not None
    assert result.ready_seen == result.signals == 4 * len(SIGNALS)
    assert result.records == sum(result.needed) and result.rejected == 0
    assert result.phase("/metrics", "storm") or result.phase("/metrics", "after")
    assert any(s.path == "/api/v1/streams" for s in result.scrapes)
    assert not result.log_problems
    assert "Longest /metrics scrape" in bench.storm_table(result)
