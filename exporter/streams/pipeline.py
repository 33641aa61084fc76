"""The one path every record takes: bytes -> JSON -> Record -> stream state.

Inputs hand raw lines or decoded JSON values here; nothing downstream ever
sees an unparsed record. Every failure becomes a counted rejection with a
reason; no record can raise out of this module.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from exporter.config import Config
from exporter.detectors import DetectorFactory
from exporter.inputs.stats import InputStats
from exporter.records import Record, RejectedRecord, normalize
from exporter.records.labels import StreamLabeler
from exporter.signals.measure import Measurements, SignalMeasurer
from exporter.streams.evidence import Evidence
from exporter.streams.stream_detectors import StreamDetectors
from exporter.streams.table import StreamState, StreamTable

log = logging.getLogger(__name__)
# Reasons exported at 0 from the start so `rate()` and ratio alerts work before the first failure.
KNOWN_REJECTION_REASONS = (
    "invalid_json",
    "invalid_utf8",
    "unknown_format",
    "missing_output",
    "too_large",
    "empty_body",
    "invalid_embedding",
    "internal_error",
)
MAX_REPORTED_ERRORS = 10
StreamKey = tuple[str, ...]
Measured = tuple[Record, StreamKey, Measurements]
# where an item came from in a partitioned source: (the source, e.g. a Kafka topic
# partition "topic/3", the item's offset in it); a stream skips what it already applied
Position = tuple[str, int]
T = TypeVar("T")
X = TypeVar("X")


@dataclass(frozen=True)
class RecordError:
    """A rejected record of a batch. It stays structured while results are folded together
    (slices of a body, worker replies); `str()` gives the text that leaves the process,
    `record N: reason: message`, in an HTTP answer or a log."""

    position: int  # index of the item within the batch (a body's slices are shifted back)
    reason: str
    message: str

    def __str__(self) -> str:
        return f"record {self.position}: {self.reason}: {self.message}"


@dataclass
class IngestResult:
    """Outcome of a batch, as answered to an HTTP client."""

    accepted: int = 0
    rejected: int = 0
    errors: list[RecordError] = field(default_factory=list)

    def add_error(self, position: int, error: RejectedRecord) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(RecordError(position, error.reason, error.message))


class Pipeline:
    def __init__(
        self,
        config: Config,
        clock: Callable[[], float] = time.time,
        learn_only: bool = False,
        calibration: Executor | None = None,
    ) -> None:
        """`calibration`: where detector thresholds are simulated (None: inline,
        deterministic in time too)."""
        self.config = config
        self.learn_only = learn_only
        self.clock = clock
        self.labeler = StreamLabeler(config.stream_labels)
        self.detector_factory = DetectorFactory(config.detectors.settings, config.detectors.signals)
        self.detector_factory.executor = calibration
        self.evidence_settings = config.evidence
        self.streams = StreamTable(
            self.labeler.names, config.max_streams, self._stream_parts
        )
        self.measurer = SignalMeasurer(config.signals)
        self.rejections: Counter[str] = Counter({reason: 0 for reason in KNOWN_REJECTION_REASONS})
        self.records = 0
        self.redelivered = 0  # records at or before a position their stream had applied
        self.processing_seconds = 0.0

    def _stream_parts(self) -> tuple[StreamDetectors, Evidence | None]:
        evidence = None
        if self.evidence_settings.enabled:
            baseline_size = self.detector_factory.settings.baseline_size
            evidence = Evidence(self.evidence_settings, baseline_size)
        return StreamDetectors.create(self.detector_factory, self.learn_only), evidence

    def reject(self, stats: InputStats, error: RejectedRecord, count: int = 1) -> None:
        self.rejections[error.reason] += count
        stats.rejected += count

    def _normalize(self, value: Any, stats: InputStats, fmt: str | None) -> list[Record]:
        """The records of one decoded value; RejectedRecord (counted) when there are none."""
        try:
            return normalize(value, fmt or self.config.format)
        except RejectedRecord as error:
            self.reject(stats, error)
            raise
        except Exception as exc:  # a bug must cost one record, never the exporter
            raise self._internal_error(stats, exc) from exc

    def _each_usable(
        self, items: Iterable[X], stats: InputStats, take: Callable[[X, InputStats], T]
    ) -> list[T]:
        """`take` of each record (`items`: a value's records, or them with their indexes).
        Each record of a multi-record value (an OTLP export) stands on its own: one bad span
        costs that span (counted), and a stream is created only for a record that made it.
        Raises the first RejectedRecord when none made it. Every record goes this way, so
        `take` is a bound method (no closure per record)."""
        taken: list[T] = []
        first_error: RejectedRecord | None = None
        for item in items:
            try:
                taken.append(take(item, stats))
            except RejectedRecord as error:
                first_error = first_error or error
            except Exception as exc:
                first_error = first_error or self._internal_error(stats, exc)
        if not taken and first_error is not None:
            raise first_error
        return taken

    def _measure_value(self, value: Any, stats: InputStats, fmt: str | None) -> list[Measured]:
        """Records of one value with their stream keys and signals (the built-in embedding
        still to come). Raises RejectedRecord (counted) when none of its records is usable."""
        return self._each_usable(self._normalize(value, stats, fmt), stats, self._measure)

    def _commit(self, measured: list[Measured], stats: InputStats, started: float,
                at: list[Position] | None = None) -> None:
        """Embed a batch's texts in shared numpy passes, then update each stream with its
        records of the batch, in arrival order. `at`: each record's position; a record at
        or before the last position its stream applied from that source is delivered
        again (after a crash or a rebalance) and skipped: no stream counts one twice."""
        self.measurer.embed_pending([m for _, _, m in measured])
        now = self.clock()
        by_stream: dict[int, tuple[StreamState, list[Record], list[Measurements]]] = {}
        moved: dict[tuple[int, str], tuple[StreamState, int]] = {}
        applied = 0
        for index, (record, key, measurements) in enumerate(measured):
            stream = self.streams.get(key)  # per record: the cap counts overflow records
            if at is not None:
                # against the position as the batch began: the records of one item (an
                # OTLP export) share its position
                source, offset = at[index]
                if offset <= stream.positions.get(source, -1):
                    self.redelivered += 1
                    continue
                moved[(id(stream), source)] = (stream, offset)
            group = by_stream.get(id(stream))
            if group is None:
                group = by_stream[id(stream)] = (stream, [], [])
            group[1].append(record)
            group[2].append(measurements)
            applied += 1
        for (_, source), (stream, offset) in moved.items():
            stream.positions[source] = offset
        for stream, records, batch in by_stream.values():
            stream.observe_many(records, batch, now)
        self.records += applied
        stats.records += applied
        if applied:
            stats.last_record_timestamp = now
        self.processing_seconds += time.perf_counter() - started

    def calibrating(self) -> bool:
        """Is a threshold being simulated off-thread for some stream right now?"""
        return any(stream.detectors.calibrating()
                   for stream in self.streams if stream.detectors is not None)

    def settle(self, *, wait: bool) -> None:
        """Let each detector whose threshold simulation has finished catch up on the
        records held meanwhile. Part of ingestion (call it from the thread that ingests):
        a stream that gets records does it as they arrive, and the service calls this
        periodically (`wait=False`) so a stream that went quiet still turns ready; reads
        (scrapes, views) never do. `wait`: also wait for those still running (a caller
        that needs the state as of now: the baseline command, tests)."""
        for stream in self.streams:
            stream.settle(wait=wait)

    def _internal_error(self, stats: InputStats, exc: Exception) -> RejectedRecord:
        log.exception("internal error while processing a record")
        error = RejectedRecord("internal_error", f"internal error: {type(exc).__name__}")
        self.reject(stats, error)
        return error

    def _invalid_embedding(self, stats: InputStats, exc: ValueError) -> RejectedRecord:
        error = RejectedRecord("invalid_embedding", str(exc))
        self.reject(stats, error)
        return error

    def _measure(self, record: Record, stats: InputStats, key: StreamKey | None = None
                 ) -> Measured:
        """One record's signals, under `key` (default: its own stream key); RejectedRecord
        (counted) when it cannot be measured."""
        if key is None:
            key = self.labeler.key(record)
        try:
            measurements = self.measurer.measure(
                record, key, self.labeler.names, defer_embedding=True
            )
        except ValueError as exc:
            raise self._invalid_embedding(stats, exc) from exc
        return record, key, measurements

    def parse_line(self, line: bytes, stats: InputStats) -> tuple[bytes, Any] | None:
        """(the stripped line, its JSON value), or None for a blank line (skipped, not
        rejected). Raises RejectedRecord (counted) for what is not JSON."""
        raw = line.strip()
        return (raw, self.decode(raw, stats)) if raw else None

    def decode(self, data: bytes, stats: InputStats) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as utf8_error:
                error = RejectedRecord("invalid_utf8", f"not valid UTF-8: {utf8_error.reason}")
            else:
                error = RejectedRecord("invalid_json", f"not valid JSON: {exc}")
            self.reject(stats, error)
            raise error from None

    def ingest_lines(
        self, lines: Iterable[bytes], stats: InputStats, fmt: str | None = None,
        positions: list[Position] | None = None,
    ) -> IngestResult:
        """A chunk of JSON-lines lines (blank ones skipped), processed as one batch;
        `positions`: each line's, from a partitioned source (see `_commit`)."""
        return self._ingest_batch(lines, stats, fmt, decode=True, positions=positions)

    def ingest_values(
        self, values: Iterable[Any], stats: InputStats, fmt: str | None = None
    ) -> IngestResult:
        return self._ingest_batch(values, stats, fmt, decode=False)

    def _ingest_batch(
        self, items: Iterable[Any], stats: InputStats, fmt: str | None, decode: bool,
        positions: list[Position] | None = None,
    ) -> IngestResult:
        """Measure every item, then embed and observe them together: the built-in embedding
        costs far less per text in shared numpy passes, and order within a stream is kept."""
        started = time.perf_counter()
        result = IngestResult()
        measured: list[Measured] = []
        at: list[Position] | None = None if positions is None else []
        for position, item in enumerate(items):
            try:
                if decode:
                    parsed = self.parse_line(item, stats)
                    if parsed is None:
                        continue
                    _, item = parsed
                records = self._measure_value(item, stats, fmt)
            except RejectedRecord as error:
                result.add_error(position, error)
                continue
            measured.extend(records)
            if at is not None and positions is not None:
                at.extend([positions[position]] * len(records))
            result.accepted += len(records)
        self._commit(measured, stats, started, at)
        return result
