"""The text writer of the per-stream families: the bytes of the golden files in every
dialect (pinned when they equalled prometheus_client's own rendering of the exporter's
MetricFamily objects), what prometheus_client's parsers read from them, the `name[]`
filter as a restricted registry applies it, and merges of several sources equal to the
sources' own samples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from exporter.metrics.catalog import FAMILIES
from exporter.metrics.exposition import OPENMETRICS, TEXT, Dialect, number
from exporter.metrics.families import StreamRenderer, merge_streams
from exporter.streams.table import StreamTable
from exporter.web.metrics_handler import negotiate
from tests import samples
from tests.exposition_helpers import (
    DIALECTS,
    ODD_MODELS,
    RAW_LABELS,
    add_raw_stream,
    exporter_with,
    golden_path,
    golden_tables,
    matches_golden,
    sample_set,
    stream_text,
)

# Accept headers and the golden dialect they get (allow-utf-8 spells legacy names as
# underscores does)
ACCEPTS = {
    "": "prom",
    "application/openmetrics-text": "openmetrics",
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8": "openmetrics",
    "application/openmetrics-text; version=1.0.0; escaping=values": "values.openmetrics",
    "text/plain; version=1.0.0; escaping=dots": "dots.prom",
    "text/plain; version=1.0.0; escaping=underscores": "prom",
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2": "prom",
}


@pytest.fixture(scope="module")
def tables() -> dict[str, StreamTable]:
    return golden_tables()


@pytest.fixture(scope="module")
def renderer(tables: dict[str, StreamTable]) -> StreamRenderer:
    return StreamRenderer(tables["streams"])


def test_state_has_every_family_and_the_odd_values(renderer: StreamRenderer) -> None:
    """Guards the goldens: they pin something only if every family has samples and
    label values need escaping."""
    text = stream_text(renderer, TEXT)
    for family in FAMILIES:
        assert f"\n{family.sample_names[0]}{{".encode() in text, family.name
    assert b'model="gpt-\\"4o\\""' in text and b'model="back\\\\slash\\\\"' in text
    assert b'served_model="a\\"b\\nc\\\\"' in text and "模型-ü ☃".encode() in text
    assert b'llm_exporter_detector_errors_total{signal="embedding"} 2.0' in text


@pytest.mark.parametrize("stem", ["streams", "empty"])
@pytest.mark.parametrize("suffix", list(DIALECTS))
def test_golden_bytes(tables: dict[str, StreamTable], stem: str, suffix: str) -> None:
    text = stream_text(StreamRenderer(tables[stem]), DIALECTS[suffix])
    assert matches_golden(text, golden_path(stem, suffix).read_bytes())


@pytest.mark.parametrize("accept", list(ACCEPTS))
def test_each_accept_header_gets_its_golden(renderer: StreamRenderer, accept: str) -> None:
    dialect, _, _ = negotiate(accept)
    golden = golden_path("streams", ACCEPTS[accept]).read_bytes()
    assert matches_golden(stream_text(renderer, dialect), golden)


def test_the_parsers_read_back_the_odd_values() -> None:
    text = sample_set(golden_path("streams", "prom").read_bytes(), openmetrics=False)
    openmetrics = sample_set(golden_path("streams", "openmetrics").read_bytes(), openmetrics=True)
    assert text == openmetrics
    assert {*ODD_MODELS, RAW_LABELS[0]} <= {dict(s[3]).get("model") for s in text}
    labels = (("model", RAW_LABELS[0]), ("route", RAW_LABELS[1]), ("served_model", 'a"b\nc\\'))
    assert ("llm_served_model_records", "counter", "llm_served_model_records_total",
            labels, "2.0") in text


def test_empty_table_writes_every_header_and_no_sample(tables: dict[str, StreamTable]) -> None:
    for dialect in (TEXT, OPENMETRICS):
        text = stream_text(StreamRenderer(tables["empty"]), dialect)
        assert all(line.startswith(b"# ") for line in text.splitlines())
        assert text.count(b"# TYPE ") == len(FAMILIES)


def test_cached_label_text_follows_new_values_and_streams() -> None:
    exporter = exporter_with(["a"])
    renderer = StreamRenderer(exporter.pipeline.streams)
    before = stream_text(renderer, TEXT)
    exporter.pipeline.ingest_values([samples.chat(model="a"), samples.chat(model="b")],
                                    exporter.input_stats[0])
    after = stream_text(renderer, TEXT)
    assert after != before
    assert after == stream_text(StreamRenderer(exporter.pipeline.streams), TEXT)


@pytest.mark.parametrize("dialect", [TEXT, OPENMETRICS], ids=["text", "openmetrics"])
def test_merge_of_sources_with_disjoint_streams(dialect: Dialect) -> None:
    one, two = exporter_with(["m1", 'm"2'], errors=2), exporter_with(["m3"], errors=3)
    add_raw_stream(two.pipeline.streams, ("x\ny", "/raw"))
    renderers = [StreamRenderer(e.pipeline.streams) for e in (one, two)]
    merged = merge_streams([r.render(dialect) for r in renderers], dialect)
    assert merged.count(b"# TYPE ") == len(FAMILIES)
    expected: set[tuple] = set()
    for renderer in renderers:
        expected |= sample_set(stream_text(renderer, dialect), dialect.openmetrics)
    errors = {s for s in expected if s[2] == "llm_exporter_detector_errors_total"}
    assert len(errors) == 2
    expected -= errors
    expected.add(("llm_exporter_detector_errors", "counter", "llm_exporter_detector_errors_total",
                  (("signal", "embedding"),), "5.0"))
    assert sample_set(merged, dialect.openmetrics) == expected


def test_merge_refuses_chunks_of_another_dialect(renderer: StreamRenderer) -> None:
    chunks = renderer.render(TEXT)
    with pytest.raises(ValueError, match="dialect"):
        merge_streams([chunks], Dialect(escaping="dots"))


class Parsed:
    """The golden text parsed back into MetricFamily objects, as a collector."""

    def __init__(self, text: bytes) -> None:
        self.families = list(parse_text(text.decode()))

    def collect(self) -> list[Metric]:
        return self.families


@pytest.mark.parametrize("names", [
    {"llm_records_total", "llm_output_tokens_bucket", "llm_exporter_detector_errors_total"},
    {"llm_input_tokens_sum", "llm_signal_window", "no_such_metric"},
    {"llm_served_model_records_total"},
])
def test_name_filter_as_restricted_registry(renderer: StreamRenderer, names: set[str]) -> None:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(Parsed(golden_path("streams", "prom").read_bytes()))
    old = generate_latest(registry.restricted_registry(names))
    new = merge_streams([renderer.render(TEXT)], TEXT, frozenset(names))
    assert matches_golden(new, old) and new


def test_golden_match_allows_only_last_bits_of_computed_values() -> None:
    golden = golden_path("streams", "prom").read_bytes()
    score = next(line for line in golden.split(b"\n") if line.startswith(b"llm_drift_score{"))
    head, _, value = score.rpartition(b" ")
    nudged = head + b" " + repr(float(value) * (1 + 1e-12)).encode()
    assert matches_golden(golden.replace(score, nudged), golden)
    assert not matches_golden(golden.replace(score, head + b" 0.5"), golden)
    records = next(line for line in golden.split(b"\n") if line.startswith(b"llm_records_total{"))
    assert not matches_golden(golden.replace(records, records + b"1"), golden)
    renamed = golden.replace(b"llm_records_total{", b"llm_record_total{", 1)
    assert not matches_golden(renamed, golden)


@given(st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.sampled_from([0, 999_999, 1_000_000, 2**53 - 1, 2**53, -(2**53), True, False]),
    st.floats(allow_nan=True, allow_infinity=True),
))
def test_number_is_floatToGoString(value: float) -> None:
    assert number(value) == floatToGoString(value)


def test_number_of_nan_and_infinities() -> None:
    assert [number(v) for v in (math.nan, math.inf, -math.inf)] == ["NaN", "+Inf", "-Inf"]
