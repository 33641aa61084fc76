"""The text renderer of the per-stream families against prometheus_client's own rendering
of the MetricFamily objects the exporter built before (benchmarks/legacy_exposition.py):
the same bytes in every dialect, the same samples through prometheus_client's parsers,
and merges of several sources equal to one table holding all their streams."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from exporter.config import parse_config
from exporter.metrics.exposition import OPENMETRICS, TEXT, Dialect, number
from exporter.metrics.families import STREAM_FAMILIES, StreamRenderer, merge_streams
from exporter.service import Exporter
from exporter.streams.table import StreamTable
from exporter.web.metrics_handler import negotiate
from tests import samples

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from legacy_exposition import legacy_stream_families

ODD_MODELS = ('gpt-"4o"', "back\\slash\\", "模型-ü ☃")
ACCEPTS = (
    "",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "application/openmetrics-text; version=1.0.0; escaping=values",
    "text/plain; version=1.0.0; escaping=dots",
    "text/plain; version=1.0.0; escaping=underscores",
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
)


class Legacy:
    def __init__(self, table: StreamTable) -> None:
        self.table = table

    def collect(self) -> Iterable[Metric]:
        return legacy_stream_families(self.table)


def exporter_with(models: Iterable[str], errors: int = 0) -> Exporter:
    """Streams with every family populated: baselines learned (baseline and window
    stats), a format rule with failures, reasoning tokens, odd label values."""
    config = parse_config({
        "inputs": [{"type": "http"}],
        "signals": {"format_validity": [{"match": {"route": "/extract"}, "expect": "json"}]},
        "detectors": {"baseline_size": 20, "window_size": 5},
    })
    exporter = Exporter(config)
    stats = exporter.input_stats[0]
    records = []
    for i in range(30):
        for model in models:
            records.append(samples.chat(model=model, text="word " * (i % 7 + 1)))
            records.append(samples.responses(model=model))
    result = exporter.pipeline.ingest_values(records, stats)
    assert result.accepted == len(records), result.errors
    exporter.pipeline.settle()  # thresholds are simulated on a thread in a running exporter
    if errors:
        stream = next(iter(exporter.pipeline.streams))
        assert stream.detectors is not None
        stream.detectors.errors["embedding"] += errors
    return exporter


def add_raw_stream(table: StreamTable, labels: tuple[str, ...]) -> None:
    """A stream set directly, with values the pipeline's sanitizer would not let through."""
    stream = table.get(labels)
    stream.records = 3
    stream.finish_reasons["length"] = 3
    stream.served_models['a"b\nc\\'] = 2
    stream.system_fingerprints["fp\n1"] = 1
    stream.last_record_time = 1764151200.125


@pytest.fixture(scope="module")
def exporter() -> Exporter:
    exporter = exporter_with(ODD_MODELS, errors=2)
    add_raw_stream(exporter.pipeline.streams, ("line\nbreak", 'quote"d\\'))
    return exporter


def legacy_text(table: StreamTable, accept: str) -> bytes:
    _, _, encoder = negotiate(accept)
    return encoder(Legacy(table)).removesuffix(b"# EOF\n")


def new_text(renderer: StreamRenderer, accept: str) -> bytes:
    dialect, _, _ = negotiate(accept)
    return merge_streams([renderer.render(dialect)], dialect)


def sample_set(text: bytes, openmetrics: bool) -> set[tuple[str, str, str, tuple, str]]:
    """(family, type, sample, labels, value) of every sample; values as prometheus_client
    writes them, so NaN compares equal."""
    if openmetrics:
        families = parse_openmetrics(text.decode() + "# EOF\n")
    else:
        families = parse_text(text.decode())
    return {(f.name, f.type, s.name, tuple(sorted(s.labels.items())), floatToGoString(s.value))
            for f in families for s in f.samples}


def test_state_has_every_family_and_the_odd_values(exporter: Exporter) -> None:
    """Guards the comparisons below: they mean something only if every family has samples
    and label values need escaping."""
    text = new_text(exporter.collector.renderer, "")
    for spec in STREAM_FAMILIES:
        assert f"\n{spec.sample_names[0]}{{".encode() in text, spec.name
    assert b'model="gpt-\\"4o\\""' in text and b'model="back\\\\slash\\\\"' in text
    assert b'served_model="a\\"b\\nc\\\\"' in text and "模型-ü ☃".encode() in text
    assert b'llm_exporter_detector_errors_total{signal="embedding"} 2.0' in text


@pytest.mark.parametrize("accept", ACCEPTS)
def test_same_bytes_as_prometheus_client(exporter: Exporter, accept: str) -> None:
    table = exporter.pipeline.streams
    assert new_text(exporter.collector.renderer, accept) == legacy_text(table, accept)


@pytest.mark.parametrize("dialect", [TEXT, OPENMETRICS], ids=["text", "openmetrics"])
def test_same_samples_through_the_parsers(exporter: Exporter, dialect: Dialect) -> None:
    accept = "application/openmetrics-text" if dialect.openmetrics else ""
    new = sample_set(new_text(exporter.collector.renderer, accept), dialect.openmetrics)
    old = sample_set(legacy_text(exporter.pipeline.streams, accept), dialect.openmetrics)
    assert new == old
    labels = {dict(s[3]).get("model") for s in new}
    assert {*ODD_MODELS, "line\nbreak"} <= labels


def test_cached_label_text_follows_new_values_and_streams() -> None:
    exporter = exporter_with(["a"])
    renderer = StreamRenderer(exporter.pipeline.streams)
    before = new_text(renderer, "")
    exporter.pipeline.ingest_values([samples.chat(model="a"), samples.chat(model="b")],
                                    exporter.input_stats[0])
    after = new_text(renderer, "")
    assert after != before
    assert after == legacy_text(exporter.pipeline.streams, "")


def test_empty_table() -> None:
    table = StreamTable(("model", "route"), max_streams=10)
    renderer = StreamRenderer(table)
    for accept in ("", "application/openmetrics-text"):
        text = new_text(renderer, accept)
        assert text == legacy_text(table, accept)
        assert all(line.startswith(b"# ") for line in text.splitlines())
        assert text.count(b"# TYPE ") == len(STREAM_FAMILIES) + 1


@pytest.mark.parametrize("dialect", [TEXT, OPENMETRICS], ids=["text", "openmetrics"])
def test_merge_of_sources_with_disjoint_streams(dialect: Dialect) -> None:
    one, two = exporter_with(["m1", 'm"2'], errors=2), exporter_with(["m3"], errors=3)
    add_raw_stream(two.pipeline.streams, ("x\ny", "/raw"))
    chunks = [StreamRenderer(e.pipeline.streams).render(dialect) for e in (one, two)]
    merged = merge_streams(chunks, dialect)
    assert merged.count(b"# TYPE ") == len(STREAM_FAMILIES) + 1
    accept = "application/openmetrics-text" if dialect.openmetrics else ""
    expected = set()
    for source in (one, two):
        expected |= sample_set(legacy_text(source.pipeline.streams, accept), dialect.openmetrics)
    errors = {s for s in expected if s[2] == "llm_exporter_detector_errors_total"}
    assert len(errors) == 2
    expected -= errors
    expected.add(("llm_exporter_detector_errors", "counter", "llm_exporter_detector_errors_total",
                  (("signal", "embedding"),), "5.0"))
    assert sample_set(merged, dialect.openmetrics) == expected


def test_merge_refuses_chunks_of_another_dialect(exporter: Exporter) -> None:
    chunks = exporter.collector.renderer.render(TEXT)
    with pytest.raises(ValueError, match="dialect"):
        merge_streams([chunks], Dialect(escaping="dots"))


@pytest.mark.parametrize("names", [
    {"llm_records_total", "llm_output_tokens_bucket", "llm_exporter_detector_errors_total"},
    {"llm_input_tokens_sum", "llm_signal_window", "no_such_metric"},
    {"llm_served_model_records_total"},
])
def test_name_filter_as_restricted_registry(exporter: Exporter, names: set[str]) -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(Legacy(exporter.pipeline.streams))
    old = generate_latest(registry.restricted_registry(names))
    new = merge_streams([exporter.collector.renderer.render(TEXT)], TEXT, frozenset(names))
    assert new == old and new


def test_registry_still_holds_the_stream_families(exporter: Exporter) -> None:
    """`exporter.registry` (programmatic use, tests) parses the text back into families."""
    text = generate_latest(exporter.registry)
    assert text.startswith(legacy_text(exporter.pipeline.streams, ""))
    value = exporter.registry.get_sample_value(
        "llm_served_model_records_total",
        {"model": "line\nbreak", "route": 'quote"d\\', "served_model": 'a"b\nc\\'},
    )
    assert value == 2.0


@given(st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([0, 999_999, 1_000_000, 2**53 - 1, 2**53, -(2**53), True, False]),
    st.floats(allow_nan=True, allow_infinity=True),
))
def test_number_is_floatToGoString(value: float) -> None:
    assert number(value) == floatToGoString(value)


def test_number_of_nan_and_infinities() -> None:
    assert [number(v) for v in (math.nan, math.inf, -math.inf)] == ["NaN", "+Inf", "-Inf"]
