"""The Collector that turns exporter state into metric families at scrape time.

It only reads in-memory state (no I/O, no locks held long). The few families that
are not per stream are built fresh each scrape in the style of prometheus_client's
own collectors; the per-stream families (the bulk: ~150 series per stream) come
from `stream_chunks` as pre-rendered text (see `exporter.metrics.exposition`), so a scrape
of thousands of streams stays cheap.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from exporter import __version__
from exporter.inputs.file import FileInput
from exporter.inputs.kafka import KafkaInput
from exporter.inputs.otlp import OtlpReceiver
from exporter.inputs.stats import InputStats
from exporter.metrics.exposition import Dialect, StreamChunks
from exporter.metrics.families import StreamRenderer
from exporter.metrics.kafka import kafka_families
from exporter.metrics.otlp import otlp_families
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore

# Where a scrape gets the per-stream families: one StreamChunks per process owning streams.


class ExporterCollector:
    def __init__(
        self,
        pipeline: Pipeline,
        inputs: Sequence[InputStats],
        build_labels: dict[str, str] | None = None,
        state: StateStore | None = None,
        file_inputs: Sequence[FileInput] = (),
        kafka: KafkaInput | None = None,
        otlp: OtlpReceiver | None = None,
    ) -> None:
        self.file_inputs = file_inputs
        self.kafka = kafka
        self.otlp = otlp
        self.pipeline = pipeline
        self.inputs = inputs
        self.state = state
        self.build_labels = {
            "version": __version__,
            "python_version": platform.python_version(),
            **(build_labels or {}),
        }
        self.renderer = StreamRenderer(pipeline.streams)

    def stream_chunks(self, dialect: Dialect) -> StreamChunks:
        """The per-stream families of the streams this process owns, pre-rendered."""
        return self.renderer.render(dialect)

    def collect(self) -> Iterable[Metric]:
        """The families that are not per stream (per-stream ones: `stream_chunks`)."""
        yield from self._rejections()
        yield from self._input_metrics()
        yield from self._self_metrics()
        if self.kafka is not None:
            yield from kafka_families(self.kafka)
        if self.otlp is not None:
            yield from otlp_families(self.otlp)

    def _rejections(self) -> Iterator[Metric]:
        rejected = CounterMetricFamily(
            "llm_records_rejected", "Records rejected, by reason.", labels=["reason"]
        )
        for reason, count in sorted(self.pipeline.rejections.items()):
            rejected.add_metric([reason], count)
        yield rejected

    def _input_metrics(self) -> Iterator[Metric]:
        read = CounterMetricFamily(
            "llm_exporter_input_records", "Records accepted from each input.", labels=["input"]
        )
        rejected = CounterMetricFamily(
            "llm_exporter_input_records_rejected",
            "Records rejected from each input.",
            labels=["input"],
        )
        read_bytes = CounterMetricFamily(
            "llm_exporter_input_read_bytes", "Bytes read by each input.", labels=["input"]
        )
        last = GaugeMetricFamily(
            "llm_exporter_input_last_record_timestamp_seconds",
            "Wall-clock time the input last delivered an accepted record.",
            labels=["input"],
        )
        errors = CounterMetricFamily(
            "llm_exporter_input_read_errors",
            "Read errors per input, by reason (errno name).",
            labels=["input", "reason"],
        )
        watched = GaugeMetricFamily(
            "llm_exporter_files_watched", "Files currently followed.", labels=["input"]
        )
        rotations = CounterMetricFamily(
            "llm_exporter_file_rotations", "File rotations detected.", labels=["input"]
        )
        truncations = CounterMetricFamily(
            "llm_exporter_file_truncations", "File truncations detected.", labels=["input"]
        )
        for stats in self.inputs:
            name = [stats.name]
            read.add_metric(name, stats.records)
            rejected.add_metric(name, stats.rejected)
            read_bytes.add_metric(name, stats.bytes_read)
            if stats.last_record_timestamp is not None:
                last.add_metric(name, stats.last_record_timestamp)
            for reason, count in stats.read_errors.items():
                errors.add_metric([stats.name, reason], count)
            if stats.kind == "file":
                watched.add_metric(name, stats.files_watched)
                rotations.add_metric(name, stats.rotations)
                truncations.add_metric(name, stats.truncations)
        yield from (read, rejected, read_bytes, last, errors, watched, rotations, truncations)
        yield from self._file_positions()
        yield from self._push_metrics()

    def _push_metrics(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "llm_exporter_http_pending_requests",
            "Push requests being read and processed now (the push queue depth).",
            labels=["input"],
        )
        responses = CounterMetricFamily(
            "llm_exporter_http_push_responses",
            "Push responses by status code (429/503: the client was told to retry).",
            labels=["input", "code"],
        )
        for stats in self.inputs:
            if stats.kind != "http":
                continue
            pending.add_metric([stats.name], stats.pending)
            for code, count in sorted(stats.responses.items()):
                responses.add_metric([stats.name, str(code)], count)
        yield from (pending, responses)

    def _file_positions(self) -> Iterator[Metric]:
        offset = GaugeMetricFamily(
            "llm_exporter_file_offset_bytes",
            "Bytes of the file read and processed (complete lines).",
            labels=["input", "path"],
        )
        size = GaugeMetricFamily(
            "llm_exporter_file_size_bytes",
            "Size of the file at the last poll; size - offset is the reading lag.",
            labels=["input", "path"],
        )
        for file_input in self.file_inputs:
            for tail in list(file_input.tails.values()):
                # a renamed-away file still draining must not share its old path's series
                path = tail.path if tail.matched else f"{tail.path} (rotated)"
                offset.add_metric([file_input.stats.name, path], tail.committed_offset)
                size.add_metric([file_input.stats.name, path], tail.size)
        yield from (offset, size)

    def _self_metrics(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "llm_exporter_build_info",
            "Build and runtime information; always 1.",
            labels=list(self.build_labels),
        )
        info.add_metric(list(self.build_labels.values()), 1)
        yield info
        measurer = self.pipeline.measurer
        tokenizer = InfoMetricFamily(
            "llm_exporter_tokenizer",
            "Where each tiktoken encoding was loaded from (offline; sha256-verified).",
            labels=["encoding", "source"],
        )
        loaded = dict(measurer.tokens.loaded_sources())
        for encoding, source in sorted(loaded.items()):
            tokenizer.add_metric([encoding, source], {})
        yield tokenizer
        yield InfoMetricFamily(
            "llm_exporter_refusal_phrases",
            "Version of the shipped refusal phrase list.",
            value={"version": str(measurer.refusals.phrases_version)},
        )
        streams = self.pipeline.streams
        yield GaugeMetricFamily("llm_exporter_streams", "Streams tracked.", value=len(streams))
        yield GaugeMetricFamily(
            "llm_exporter_max_streams", "Configured stream limit.", value=streams.max_streams
        )
        yield CounterMetricFamily(
            "llm_exporter_overflow_records",
            "Records sent to the __other__ stream because max_streams was reached.",
            value=streams.overflow_records,
        )
        if self.state is not None:
            yield CounterMetricFamily(
                "llm_exporter_state_saves", "Detector state checkpoints written.",
                value=self.state.saves,
            )
            yield CounterMetricFamily(
                "llm_exporter_state_save_failures", "Detector state checkpoints that failed.",
                value=self.state.save_failures,
            )
            yield CounterMetricFamily(
                "llm_exporter_state_load_failures",
                "Unusable state stores or stream entries set aside at start-up.",
                value=self.state.load_failures,
            )
            yield GaugeMetricFamily(
                "llm_exporter_state_writable",
                "1 if the last state checkpoint was committed, 0 while they fail "
                "(read-only state_dir, full disk).",
                value=1.0 if self.state.writable else 0.0,
            )
            yield GaugeMetricFamily(
                "llm_exporter_state_size_bytes",
                "Size of the state store on disk (database and write-ahead log), "
                "after the last checkpoint.",
                value=self.state.size_bytes,
            )
            yield GaugeMetricFamily(
                "llm_exporter_state_last_save_timestamp_seconds",
                "Unix time of the last state checkpoint committed.",
                value=self.state.last_save,
            )
        yield CounterMetricFamily(
            "llm_exporter_processing_seconds",
            "CPU-bound time spent normalizing and accounting records.",
            value=self.pipeline.processing_seconds,
        )


def build_rest_registry(collector: ExporterCollector) -> CollectorRegistry:
    """What `/metrics` serves after the per-stream families: the collector's own families,
    then process and platform metrics. A private registry for each caller (one per
    `/metrics` endpoint), never the global one: tests can run several side by side."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
