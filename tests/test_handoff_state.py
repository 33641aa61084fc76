"""A stream handed over mid-run (saved, dropped, restored in another pipeline, as a Kafka
partition moves between members) ends in exactly the state it would have reached without
the move: detectors, counters and the offsets it applied. Through the real checkpoint
encoding (`tests.state_helpers.round_trip`), at any cut points."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.kafka_traffic import records
from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import restore_streams
from exporter.streams.view import streams_view
from tests.state_helpers import plain, round_trip

RECORDS = 2400
CONFIG = parse_config({"detectors": {"baseline_size": 300, "window_size": 50}})
LINES = list(records(RECORDS, streams=3, seed=5, drift_after=0.5))
NOW = 1_800_000_000.0  # arrival times are the clock's: the same for every pipeline


def _feed(pipeline: Pipeline, start: int, end: int, batch: int) -> None:
    stats = InputStats("kafka", "kafka")
    for at in range(start, end, batch):
        stop = min(end, at + batch)
        pipeline.ingest_lines([line for _, line in LINES[at:stop]], stats,
                              positions=[("llm/0", n) for n in range(at, stop)])


def _state(pipeline: Pipeline) -> list[Any]:
    return [[list(s.labels), s.counters(), plain(s.detectors.snapshot())]
            for s in sorted(pipeline.streams, key=lambda s: s.labels)]


def _moved(pipeline: Pipeline) -> Pipeline:
    fresh = Pipeline(CONFIG, clock=lambda: NOW)
    restored, failures = restore_streams(fresh, round_trip(pipeline))
    assert failures == 0 and restored == len(pipeline.streams)
    return fresh


REFERENCE = Pipeline(CONFIG, clock=lambda: NOW)
_feed(REFERENCE, 0, RECORDS, 500)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(cuts=st.lists(st.integers(1, RECORDS - 1), min_size=1, max_size=3, unique=True),
       batch=st.sampled_from([37, 256]))
def test_a_stream_moved_at_any_point_ends_as_if_it_never_moved(cuts, batch):
    pipeline, at = Pipeline(CONFIG, clock=lambda: NOW), 0
    for cut in sorted(cuts):
        _feed(pipeline, at, cut, batch)
        pipeline, at = _moved(pipeline), cut
    _feed(pipeline, at, RECORDS, batch)
    assert _state(pipeline) == _state(REFERENCE)
    assert streams_view(pipeline.streams, False) == streams_view(REFERENCE.streams, False)


def test_records_delivered_again_after_a_move_are_not_applied_twice():
    pipeline = Pipeline(CONFIG, clock=lambda: NOW)
    _feed(pipeline, 0, 1000, 100)
    moved = _moved(pipeline)
    _feed(moved, 800, RECORDS, 100)  # the new owner reads again from an older offset
    assert moved.redelivered == 200
    assert _state(moved) == _state(REFERENCE)


def test_the_embedding_reservoir_draws_go_on_after_a_restore():
    """The MMD detector samples its baseline reservoir at random while learning: a restore
    must continue the same draws (the generator's state is saved)."""
    pipeline = Pipeline(CONFIG, clock=lambda: NOW)
    # ~283 records a stream: past the reservoir's first 256 distinct rows (then sampled at
    # random), before the baseline's 300
    _feed(pipeline, 0, 850, 850)
    moved = _moved(pipeline)
    _feed(moved, 850, RECORDS, 850)
    got = {tuple(s.labels): s.detectors.detectors["embedding"].snapshot()["state"]
           for s in moved.streams}
    want = {tuple(s.labels): s.detectors.detectors["embedding"].snapshot()["state"]
            for s in REFERENCE.streams}
    assert plain(got) == plain(want)
