"""Text exposition of the per-stream metric families without MetricFamily objects.

Why: with 1,000 streams a scrape holds ~70-150k samples. Building a prometheus_client
`Sample` (and its label dict) for each and re-escaping every label of every sample
cost about half a second on the event loop. A stream's labels never change, so its
escaped label text is built once and kept; a scrape then only formats numbers.
The text written is what prometheus_client writes for the same families, byte for
byte, in both formats (tests/golden/ pins the bytes; tests/test_exposition*.py).

The stream part is built in two steps so it can be produced in several processes
and merged in one: `StreamChunks` holds one source's samples per family as bytes
(no HELP/TYPE headers) plus the families that sum over streams as plain numbers;
`merge` writes each family's header once, every source's chunk after it, and the
sums. Sample lines depend only on the `Dialect` (format and name escaping).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache

from prometheus_client.openmetrics import exposition as om
from prometheus_client.utils import floatToGoString
from prometheus_client.validation import _is_valid_legacy_metric_name

from exporter.metrics.catalog import Family


@dataclass(frozen=True)
class Dialect:
    """What a scrape asked for: OpenMetrics or the Prometheus text format, and how
    metric and label names are escaped (prometheus_client's `escaping` values)."""

    openmetrics: bool = False
    escaping: str = om.UNDERSCORES


TEXT = Dialect()
OPENMETRICS = Dialect(openmetrics=True)


@dataclass
class StreamChunks:
    """One source's share of the stream families: `families[i]` is the sample text of
    the i-th family written per stream (`exporter.metrics.catalog`; b"" if none), and
    `sums` holds families that sum over streams ({family name: {label values: value}})
    as numbers, so a merge of several sources can add them up. Picklable."""

    dialect: Dialect
    families: list[bytes]
    sums: dict[str, Counter[tuple[str, ...]]] = field(default_factory=dict)


def escape_value(value: str) -> str:
    """A label value as both formats write it (prometheus_client escapes values alike)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def number(value: float) -> str:
    """`floatToGoString`, with fast paths for the small integers most samples are and
    for booleans (drift detected, baseline ready)."""
    if type(value) is int and -(2**53) < value < 1_000_000:
        return f"{value}.0"
    if type(value) is bool:
        return "1.0" if value else "0.0"
    return floatToGoString(value)


def label_segments(
    pairs: Iterable[tuple[str, str]], extras: Sequence[str], escaping: str
) -> tuple[str, ...]:
    """The label text of samples carrying `pairs` (fixed name/value pairs) and `extras`
    (label names whose values vary per sample), cut around the varying values.

    Names are sorted as prometheus_client sorts them. A sample line is
    `name + seg[0] + extra_value[0] + seg[1] + ... + seg[-1] + value`, with extra values
    escaped and given in the order of `sorted(extras)`; the last segment ends with the
    space before the value.
    """
    labels: list[tuple[str, str | None]] = [(n, escape_value(v)) for n, v in pairs]
    labels += [(name, None) for name in extras]
    labels.sort(key=lambda item: item[0])
    if not labels:
        return (" ",)
    segments: list[str] = []
    current = "{"
    for i, (name, value) in enumerate(labels):
        current += ("," if i else "") + om.escape_label_name(name, escaping) + '="'
        if value is None:
            segments.append(current)
            current = '"'
        else:
            current += value + '"'
    segments.append(current + "} ")
    return tuple(segments)


@dataclass(frozen=True)
class FamilyNames:
    """A family's header and sample names as written in one dialect."""

    header: bytes
    samples: tuple[str, ...]


@cache
def family_names(spec: Family, dialect: Dialect) -> FamilyNames:
    """Spelled the way prometheus_client's two `generate_latest` spell them."""
    escaping = dialect.escaping
    for sample in spec.sample_names:
        if not _is_valid_legacy_metric_name(sample):  # the other line syntax is not needed
            raise ValueError(f"{sample}: not a legacy Prometheus metric name")
    if dialect.openmetrics:
        name = om.escape_metric_name(spec.name, escaping)
        doc = om._escape(spec.help, om.ALLOWUTF8, om._is_legacy_labelname_rune)
        header = f"# HELP {name} {doc}\n# TYPE {name} {spec.type}\n"
        samples = tuple(om._escape(s, escaping, om._is_legacy_labelname_rune)
                        for s in spec.sample_names)
    else:
        name = om.escape_metric_name(spec.name + ("_total" if spec.type == "counter" else ""),
                                     escaping)
        doc = spec.help.replace("\\", r"\\").replace("\n", r"\n")
        header = f"# HELP {name} {doc}\n# TYPE {name} {spec.type}\n"
        samples = tuple(om.escape_metric_name(s, escaping) for s in spec.sample_names)
    return FamilyNames(header.encode(), samples)


def merge(
    sources: Sequence[StreamChunks],
    families: Sequence[Family],
    summed: Sequence[Family],
    dialect: Dialect,
    names: frozenset[str] | None = None,
) -> bytes:
    """The stream part of a scrape: every family of `families` (header once, then each
    source's chunk), then the `summed` families (labelled by their `labels` only) added up over the
    sources, sorted by label values. With `names` (the `name[]` query filter), only
    samples of those names are kept and families left without samples are dropped,
    as prometheus_client's restricted registry does."""
    if any(source.dialect != dialect for source in sources):
        raise ValueError("stream chunks rendered for another dialect")
    out: list[bytes] = []
    for i, spec in enumerate(families):
        spelled = family_names(spec, dialect)
        chunks = [source.families[i] for source in sources]
        if names is not None:
            chunks = _restrict(chunks, spec, spelled, names)
            if not any(chunks):
                continue
        out.append(spelled.header)
        out.extend(chunks)
    for spec in summed:
        total: Counter[tuple[str, ...]] = Counter()
        for source in sources:
            total.update(source.sums.get(spec.name, {}))
        spelled = family_names(spec, dialect)
        if names is not None and (spec.sample_names[0] not in names or not total):
            continue
        out.append(spelled.header)
        out.append(_summed_lines(spelled.samples[0], spec.labels, total, dialect).encode())
    return b"".join(out)


def _summed_lines(
    sample: str, label_names: tuple[str, ...], total: Counter[tuple[str, ...]], dialect: Dialect
) -> str:
    lines = []
    for values, value in sorted(total.items()):
        (segment,) = label_segments(zip(label_names, values, strict=True), (), dialect.escaping)
        lines.append(f"{sample}{segment}{number(value)}\n")
    return "".join(lines)


def _restrict(
    chunks: list[bytes], spec: Family, spelled: FamilyNames, names: frozenset[str]
) -> list[bytes]:
    """Keep the lines of the sample names asked for (the rare `name[]` path)."""
    wanted = {s for s, escaped in zip(spec.sample_names, spelled.samples, strict=True)
              if s in names}
    if not wanted:
        return []
    if len(wanted) == len(spec.sample_names):
        return chunks
    prefixes = tuple(escaped.encode() + end for s, escaped
                     in zip(spec.sample_names, spelled.samples, strict=True)
                     if s in wanted for end in (b"{", b" "))
    return [b"".join(line for line in chunk.splitlines(keepends=True)
                     if line.startswith(prefixes)) for chunk in chunks]
