"""Shared by the exposition tests: a deterministic exporter with every per-stream family
populated (odd label values included), the golden files its stream families must
render to, and a parser-level view of an exposition.

The goldens pin the exact bytes of the per-stream families. After an intended change
to them (a new family, a new help text), regenerate with

    python -m tests.exposition_helpers

and review the diff of tests/golden/.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.openmetrics import exposition as om
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.utils import floatToGoString

from exporter.config import parse_config
from exporter.metrics.collector import build_rest_registry
from exporter.metrics.exposition import OPENMETRICS, TEXT, Dialect
from exporter.metrics.families import StreamRenderer, merge_streams
from exporter.service import Exporter
from exporter.streams.table import StreamTable
from tests import samples

GOLDEN = Path(__file__).resolve().parent / "golden"
ODD_MODELS = ('gpt-"4o"', "back\\slash\\", "模型-ü ☃")
RAW_LABELS = ("line\nbreak", 'quote"d\\')
# the golden file suffix of each dialect whose bytes differ (allow-utf-8 writes the
# underscores bytes: every name here is a legacy one)
DIALECTS = {
    "prom": TEXT,
    "openmetrics": OPENMETRICS,
    "dots.prom": Dialect(escaping=om.DOTS),
    "values.openmetrics": Dialect(openmetrics=True, escaping=om.VALUES),
}

Sample = tuple[str, str, str, tuple[tuple[str, str], ...], str]


def exporter_with(models: Iterable[str], errors: int = 0) -> Exporter:
    """Streams with every family populated: baselines learned (baseline and window
    stats), a format rule with failures, reasoning tokens, odd label values. Every
    record carries its own timestamp, so the exposition is the same on every run."""
    config = parse_config({
        "inputs": [{"type": "http"}],
        "signals": {"format_validity": [{"match": {"route": "/extract"}, "expect": "json"}]},
        # refusal with a seasonal baseline: its `llm_drift_baseline_waiting` series too
        "detectors": {"baseline_size": 20, "window_size": 5,
                      "refusal": {"baseline": {"mode": "seasonal", "period": "2h"}}},
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
    exporter.pipeline.settle(wait=True)  # a running exporter simulates thresholds on a thread
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


def golden_exporter() -> Exporter:
    """The state the goldens are rendered from."""
    exporter = exporter_with(ODD_MODELS, errors=2)
    add_raw_stream(exporter.pipeline.streams, RAW_LABELS)
    return exporter


def golden_tables() -> dict[str, StreamTable]:
    """Golden stem: the table rendered to it."""
    return {"streams": golden_exporter().pipeline.streams,
            "empty": StreamTable(("model", "route"), max_streams=10)}


def golden_path(stem: str, suffix: str) -> Path:
    return GOLDEN / f"{stem}.{suffix}"


def stream_text(renderer: StreamRenderer, dialect: Dialect) -> bytes:
    """The per-stream part of a scrape of one process."""
    return merge_streams([renderer.render(dialect)], dialect)


def sample_set(text: bytes, openmetrics: bool) -> set[Sample]:
    """(family, type, sample, labels, value) of every sample as prometheus_client's parsers
    read them; values as prometheus_client writes them, so NaN compares equal."""
    if openmetrics:
        families = parse_openmetrics(text.decode().removesuffix("# EOF\n") + "# EOF\n")
    else:
        families = parse_text(text.decode())
    return {(f.name, f.type, s.name, tuple(sorted(s.labels.items())), floatToGoString(s.value))
            for f in families for s in f.samples}


def metrics_text(exporter: Exporter) -> bytes:
    """What `/metrics` of this one-process exporter answers in the text format, without
    a server or an event loop: the stream families, then the collector's and
    prometheus_client's own families."""
    rest = generate_latest(build_rest_registry(exporter.collector))
    return stream_text(exporter.collector.renderer, TEXT) + rest


# Families whose values come from the detectors' floating-point statistics (numpy's
# transcendental functions and BLAS products may differ in the last bits between CPUs):
# their values are compared to a relative 1e-9, everything else byte for byte.
COMPUTED = (b"llm_drift_score", b"llm_signal_baseline", b"llm_signal_window")


def split_golden(text: bytes, golden: bytes) -> tuple[bytes, bytes]:
    """`text` as (its part standing where `golden` stands, the rest): as many lines as
    the golden has."""
    count = golden.count(b"\n")
    lines = text.split(b"\n", count)
    head = b"\n".join(lines[:count]) + b"\n" if len(lines) > count else text
    return head, lines[count] if len(lines) > count else b""


def matches_golden(text: bytes, golden: bytes) -> bool:
    """The exposition equals the golden, byte for byte but for the values of COMPUTED
    samples, which may differ by a relative 1e-9 (the same sample, labels and format)."""
    if text == golden:
        return True
    ours, theirs = text.split(b"\n"), golden.split(b"\n")
    if len(ours) != len(theirs):
        return False
    for line, expected in zip(ours, theirs, strict=True):
        if line == expected:
            continue
        head, _, value = line.rpartition(b" ")
        expected_head, _, expected_value = expected.rpartition(b" ")
        if head != expected_head or not head.startswith(COMPUTED):
            return False
        if not math.isclose(float(value), float(expected_value), rel_tol=1e-9, abs_tol=1e-12):
            return False
    return True


def write_goldens() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for stem, table in golden_tables().items():
        renderer = StreamRenderer(table)
        for suffix, dialect in DIALECTS.items():
            golden_path(stem, suffix).write_bytes(stream_text(renderer, dialect))


if __name__ == "__main__":
    write_goldens()
