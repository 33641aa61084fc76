"""The demo's drift schedule is detected: each signal on its stream, none before its time."""

from __future__ import annotations

import asyncio

from exporter import demo
from exporter.inputs.stats import InputStats
from exporter.service import Exporter
from exporter.streams.pipeline import Pipeline


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_764_000_000.0

    def __call__(self) -> float:
        return self.now


def test_each_scheduled_drift_is_detected_after_its_time():
    clock = FakeClock()
    generator = demo.TrafficGenerator(seed=11, clock=clock)
    pipeline = Pipeline(demo.DEMO_CONFIG, clock=clock)
    stats = InputStats("demo", "demo")
    first_detection: dict[tuple[str, str], float] = {}
    records = generator.records()
    rate = 40.0
    while clock.now - generator.started < 240:
        pipeline.ingest_values([next(records)], stats)
        clock.now += 1 / rate
        for stream in pipeline.streams:
            for signal, detector in stream.detectors.detectors.items():
                key = (stream.labels[1], signal)
                if detector.drift_detected and key not in first_detection:
                    first_detection[key] = clock.now - generator.started
    expected = {
        ("/chat", "output_tokens"): demo.DRIFTS["chat_longer"],
        ("/extract", "format_validity"): demo.DRIFTS["extract_prose"],
        ("/summarize", "embedding"): demo.DRIFTS["summarize_topics"],
        ("/chat", "refusal"): demo.DRIFTS["chat_refusals"],
    }
    for key, at in expected.items():
        assert key in first_detection, (key, first_detection)
        assert at < first_detection[key] < at + 60, (key, first_detection[key])
    # Other signals may follow a change (prose around JSON also lengthens /extract answers and
    # moves its embedding), but nothing fires on a stream before its first scheduled change.
    first_change = {"/chat": demo.DRIFTS["chat_longer"],
                    "/extract": demo.DRIFTS["extract_prose"],
                    "/summarize": demo.DRIFTS["summarize_topics"]}
    for (route, signal), at in first_detection.items():
        assert at > first_change[route], (route, signal, at)


async def test_the_demo_runs_as_a_source_of_the_exporter():
    """`demo` adds its generator through `Exporter.add_source`: counted as an input of its own."""
    exporter = Exporter(demo.DEMO_CONFIG)
    exporter.add_source("demo", "demo", lambda sink: demo.feed(sink, rate_per_second=400))
    await exporter.start()
    try:
        await asyncio.sleep(0.3)
    finally:
        await exporter.stop()
    stats = exporter.input_stats[-1]
    assert (stats.name, stats.kind) == ("demo", "demo")
    assert stats.records > 0 and exporter.pipeline.records == stats.records
