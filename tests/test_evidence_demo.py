"""The demo's drifts through the real pipeline: while a format or refusal drift holds, the
window examples shown for that signal are invalid replies or refusals."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from exporter import demo
from exporter.inputs.stats import InputStats
from exporter.streams.pipeline import Pipeline
from exporter.streams.view import streams_view


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_764_000_000.0

    def __call__(self) -> float:
        return self.now


def invalid_json(text: str) -> bool:
    """Judged apart from the exporter's format rule: /extract replies must be JSON objects."""
    try:
        return not isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return True


def refusal(text: str) -> bool:
    return text in demo.REFUSALS


@pytest.mark.slow
def test_demo_format_and_refusal_drifts_show_invalid_replies_and_refusals():
    clock = FakeClock()
    generator = demo.TrafficGenerator(seed=11, clock=clock)
    pipeline = Pipeline(demo.DEMO_CONFIG, clock=clock)
    stats = InputStats("demo", "demo")
    records = generator.records()
    checked: Counter[tuple[str, str]] = Counter()
    step = 0
    while clock.now - generator.started < 240:
        pipeline.ingest_values([next(records)], stats)  # one at a time, as the demo feeds them
        clock.now += 1 / 40
        step += 1
        if step % 40:
            continue
        for view in streams_view(pipeline.streams):  # once a second of demo time
            for signal, carries in (("format_validity", invalid_json), ("refusal", refusal)):
                state = view["signals"].get(signal)
                if state is None or not state["drift_detected"]:
                    continue
                window = state["examples"]["window"]
                shown = [example["text"] for example in window]
                assert len(shown) == 3 and sum(map(carries, shown)) >= 2, (signal, shown)
                checked[view["labels"]["route"], signal] += 1
    # each drift held for many of the checks (a drift that never fired would check nothing)
    assert checked["/extract", "format_validity"] >= 20, checked
    assert checked["/chat", "refusal"] >= 20, checked
