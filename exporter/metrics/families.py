"""The per-stream metric families of one StreamTable, written as `StreamChunks`.

What is written comes from the table in `exporter.metrics.catalog` (names, types, help
texts, labels, value functions, order); `exporter.metrics.exposition` explains why it
is written as text here rather than built as MetricFamily objects. This module only
knows how to write a family of each shape: no labels, one or two labels beside the
stream labels, a histogram; per stream or per detector (labelled by signal).
"""

from __future__ import annotations

from collections import Counter

from prometheus_client.openmetrics.exposition import escape_label_name

from exporter.detectors.base import Detector
from exporter.metrics.catalog import FAMILIES, Family
from exporter.metrics.exposition import (
    Dialect,
    StreamChunks,
    escape_value,
    family_names,
    label_segments,
    merge,
    number,
)
from exporter.signals.totals import Histogram
from exporter.streams.table import StreamState, StreamTable

WRITTEN = tuple(family for family in FAMILIES if not family.summed)  # a chunk each, in order
SUMMED = tuple(family for family in FAMILIES if family.summed)
# How a family's samples are written, from its labels: with none; one; two (in sorted
# order or not); a histogram. Per detector, the first label is the signal.
PLAIN, ONE, TWO, TWO_SWAPPED, HISTOGRAM = range(5)
Segments = dict[tuple[str, ...], tuple[str, ...]]
# a stream's label text, a signal (escaped), its detector and the detector's summary
DetectorRow = tuple[Segments, str, Detector, dict[str, dict[str, float]]]


def _how(family: Family) -> int:
    if family.summed and family.per != "stream":
        raise ValueError(f"{family.name}: a family summed over streams is read per stream")
    if family.type == "histogram":
        if family.labels or family.per != "stream":
            raise ValueError(f"{family.name}: histograms take no labels beside the stream's")
        return HISTOGRAM
    if family.per == "signal" and family.labels[:1] != ("signal",):
        raise ValueError(f"{family.name}: a family per detector is labelled by signal first")
    if len(family.labels) > 2:
        raise ValueError(f"{family.name}: at most two labels beside the stream labels")
    if len(family.labels) == 2 and list(family.labels) != sorted(family.labels):
        return TWO_SWAPPED
    return len(family.labels)


_HOW = {family: _how(family) for family in FAMILIES}
_SHAPE = {family: tuple(sorted(family.labels)) for family in FAMILIES}
# every combination of varying label names a family uses, as label_segments orders them
SHAPES = tuple({(), ("le",), *(tuple(sorted(family.labels)) for family in FAMILIES)})
_EXTRA_NAMES = tuple(sorted({name for shape in SHAPES for name in shape}))


class Escaped(dict[str, str]):
    """Label values escaped, each once per scrape: most repeat on every stream (finish
    reasons, signals, stats), and a dict hit costs a quarter of `escape_value`."""

    def __missing__(self, value: str) -> str:
        escaped = self[value] = escape_value(value)
        return escaped


class StreamRenderer:
    """Writes the stream families of one StreamTable. Holds each stream's label text cut
    into segments (built on first sight of the stream; labels never change), so a scrape
    formats numbers and little else. Kept per spelling of the label names: escapings
    that spell them alike (underscores and allow-utf-8 for legacy names) share it."""

    def __init__(self, table: StreamTable) -> None:
        self.table = table
        self._segments: dict[tuple[str, ...], dict[tuple[str, ...], Segments]] = {}

    def render(self, dialect: Dialect) -> StreamChunks:
        label_names = self.table.label_names
        spelling = tuple(escape_label_name(name, dialect.escaping)
                         for name in (*label_names, *_EXTRA_NAMES))
        cached = self._segments.setdefault(spelling, {})
        streams = list(self.table)
        for stream in streams:
            segments = cached.get(stream.labels)
            if segments is None:
                pairs = tuple(zip(label_names, stream.labels, strict=True))
                segments = {shape: label_segments(pairs, shape, dialect.escaping)
                            for shape in SHAPES}
                cached[stream.labels] = segments
        if len(cached) > len(streams):  # streams went away: forget their text
            self._segments[spelling] = cached = {s.labels: cached[s.labels] for s in streams}
        labelled = [(cached[stream.labels], stream) for stream in streams]
        escaped = Escaped()
        # one row per detector: a stream's summary is asked once per scrape
        detectors = [(segments, escaped[signal], detector, detector.summary())
                     for segments, stream in labelled if stream.detectors is not None
                     for signal, detector in stream.detectors.detectors.items()]
        chunks = []
        for family in WRITTEN:
            names = family_names(family, dialect).samples
            if family.per == "stream":
                lines = _per_stream(family, names, labelled, escaped)
            else:
                lines = _per_detector(family, names[0], detectors, escaped)
            chunks.append("".join(lines).encode())
        sums = {family.name: _summed(family, streams) for family in SUMMED}
        return StreamChunks(dialect, chunks, sums)


def merge_streams(
    sources: list[StreamChunks], dialect: Dialect, names: frozenset[str] | None = None
) -> bytes:
    """The stream part of a scrape from any number of sources owning disjoint streams."""
    return merge(sources, WRITTEN, SUMMED, dialect, names)


def _per_stream(
    family: Family, names: tuple[str, ...], labelled: list[tuple[Segments, StreamState]],
    escaped: Escaped,
) -> list[str]:
    """The sample lines of a family read from each stream, in stream order."""
    value, how, shape, name = family.value, _HOW[family], _SHAPE[family], names[0]
    if how == PLAIN:
        return [f"{name}{segments[shape][0]}{number(v)}\n" for segments, stream in labelled
                if (v := value(stream)) is not None]
    if how == ONE:
        return [f"{name}{a}{escaped[x]}{b}{number(n)}\n" for segments, stream in labelled
                for a, b in (segments[shape],) for x, n in value(stream)]
    if how == HISTOGRAM:
        lines: list[str] = []
        for segments, stream in labelled:
            if (histogram := value(stream)) is not None:
                _histogram(histogram, names, segments[("le",)], segments[()][0], lines)
        return lines
    swap = how == TWO_SWAPPED
    return [f"{name}{a}{escaped[y if swap else x]}{b}{escaped[x if swap else y]}{c}"
            f"{number(n)}\n" for segments, stream in labelled
            for a, b, c in (segments[shape],) for (x, y), n in value(stream)]


def _per_detector(
    family: Family, name: str, detectors: list[DetectorRow], escaped: Escaped
) -> list[str]:
    """The sample lines of a family read from each detector (and its summary), labelled
    by signal (`sig`, escaped) first."""
    value, how, shape = family.value, _HOW[family], _SHAPE[family]
    if how == ONE:
        return [f"{name}{a}{sig}{b}{number(value(detector, summary))}\n"
                for segments, sig, detector, summary in detectors
                for a, b in (segments[shape],)]
    if how == TWO:
        return [f"{name}{a}{sig}{b}{escaped[x]}{c}{number(n)}\n"
                for segments, sig, detector, summary in detectors
                for a, b, c in (segments[shape],) for x, n in value(detector, summary)]
    # the other label sorts before `signal`
    return [f"{name}{a}{escaped[x]}{b}{sig}{c}{number(n)}\n"
            for segments, sig, detector, summary in detectors
            for a, b, c in (segments[shape],) for x, n in value(detector, summary)]


def _summed(family: Family, streams: list[StreamState]) -> Counter[tuple[str, ...]]:
    """A family summed over streams, by its label values."""
    total: Counter[tuple[str, ...]] = Counter()
    for stream in streams:
        for key, n in family.value(stream):
            total[(key,) if len(family.labels) == 1 else key] += n
    return total


def _histogram(
    histogram: Histogram, spelled: tuple[str, ...], le: tuple[str, ...], plain: str,
    lines: list[str],
) -> None:
    bucket, count, total = spelled
    a, b = le
    running = 0
    for bound, observed in zip(_le_values(histogram.bounds), histogram.counts, strict=True):
        running += observed
        # `number` inlined: buckets are a third of all samples
        value = f"{running}.0" if type(running) is int and running < 1_000_000 else number(running)
        lines.append(f"{bucket}{a}{bound}{b}{value}\n")
    lines.append(f"{count}{plain}{number(running)}\n")
    lines.append(f"{total}{plain}{number(histogram.total)}\n")


_LE_VALUES: dict[tuple[float, ...], tuple[str, ...]] = {}


def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The `le` label values of a histogram with these bounds, as `Histogram.cumulative()`
    spells them (asked once per set of bounds)."""
    values = _LE_VALUES.get(bounds)
    if values is None:
        empty = Histogram(bounds=bounds, counts=[0] * (len(bounds) + 1))
        values = _LE_VALUES[bounds] = tuple(escape_value(le) for le, _ in empty.cumulative())
    return values
