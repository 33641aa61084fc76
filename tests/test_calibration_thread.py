"""Thresholds simulated on a thread (a running exporter) against inline (replay): the same
stream state, events at the same record indexes, in every view the user reads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.streams.pipeline import Pipeline
from exporter.streams.view import streams_view
from tests.calibration_cases import SETTINGS, records
from tests.state_helpers import snapshots

CONFIG = parse_config(SETTINGS)


def test_same_views_and_event_indexes_as_inline() -> None:
    inline = Pipeline(CONFIG, clock=lambda: 1.0)
    inline.ingest_values(records(), InputStats("t", "test"))
    with ThreadPoolExecutor(1) as executor:
        threaded = Pipeline(CONFIG, clock=lambda: 1.0, calibration=executor)
        gate = threading.Event()
        executor.submit(gate.wait)  # every simulation waits until all records are in
        threaded.ingest_values(records(), InputStats("t", "test"))
        stream = next(iter(threaded.streams))
        assert stream.detectors is not None
        assert not any(d.baseline_ready for d in stream.detectors.detectors.values())
        gate.set()
        executor.submit(lambda: None).result()  # queued after them: all have finished
        threaded.settle(wait=False)  # the ingest side's tick takes finished ones in
    views = streams_view(threaded.streams)
    expected = streams_view(inline.streams)
    events = expected[0]["signals"]["refusal"]["events"]
    assert events and events[0]["record"] >= 240
    assert expected[0]["signals"]["format_validity"]["events"]
    assert views == expected
    assert snapshots(threaded) == snapshots(inline)


def test_a_failed_simulation_costs_only_its_detector() -> None:
    with ThreadPoolExecutor(1) as executor:
        pipeline = Pipeline(CONFIG, clock=lambda: 1.0, calibration=executor)
        gate = threading.Event()
        executor.submit(gate.wait)
        pipeline.ingest_values(records()[:150], InputStats("t", "test"))
        stream = next(iter(pipeline.streams))
        assert stream.detectors is not None
        detector = stream.detectors.detectors["output_tokens"]
        assert detector.calibrating
        detector._calibrating = executor.submit(lambda: 1 / 0)  # a bug in a simulation
        gate.set()
        executor.submit(lambda: None).result()  # queued after them all: all have finished
        pipeline.settle(wait=False)  # must not raise
    views = streams_view(pipeline.streams)
    assert stream.detectors.errors["output_tokens"] == 1
    assert not detector.baseline_ready and not detector.calibrating  # learning again
    assert views[0]["signals"]["refusal"]["baseline_ready"]
