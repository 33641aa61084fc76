"""The Collector that turns exporter state into metric families at scrape time.

It only reads in-memory state (no I/O, no locks held long), so a scrape stays
cheap with thousands of streams; families are built fresh each scrape in the
style of prometheus_client's own collectors.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from exporter import __version__
from exporter.drift_metrics import drift_metrics
from exporter.inputs.file import FileInput
from exporter.inputs.stats import InputStats
from exporter.pipeline import Pipeline
from exporter.records.record import FINISH_REASONS
from exporter.signals.format import INVALID_REASONS
from exporter.state import StateStore


class ExporterCollector:
    def __init__(
        self,
        pipeline: Pipeline,
        inputs: Sequence[InputStats],
        build_labels: dict[str, str] | None = None,
        state: StateStore | None = None,
        file_inputs: Sequence[FileInput] = (),
    ) -> None:
        self.file_inputs = file_inputs
        self.pipeline = pipeline
        self.inputs = inputs
        self.state = state
        self.build_labels = {
            "version": __version__,
            "python_version": platform.python_version(),
            **(build_labels or {}),
        }

    def collect(self) -> Iterable[Metric]:
        yield from self._stream_metrics()
        yield from self._signal_metrics()
        yield from drift_metrics(self.pipeline.streams)
        yield from self._rejections()
        yield from self._input_metrics()
        yield from self._self_metrics()

    def _stream_metrics(self) -> Iterator[Metric]:
        names = list(self.pipeline.streams.label_names)
        records = CounterMetricFamily(
            "llm_records", "LLM records accepted, per stream.", labels=names
        )
        finish = CounterMetricFamily(
            "llm_finish_reasons",
            "Records by normalized finish reason (stop, length, content_filter, tool_call, "
            "refusal, error, other).",
            labels=[*names, "finish_reason"],
        )
        served = CounterMetricFamily(
            "llm_served_model_records",
            "Records by the model version the provider reports having served.",
            labels=[*names, "served_model"],
        )
        fingerprints = CounterMetricFamily(
            "llm_system_fingerprint_records",
            "Records by the provider's system_fingerprint, where reported.",
            labels=[*names, "system_fingerprint"],
        )
        last = GaugeMetricFamily(
            "llm_last_record_timestamp_seconds",
            "Time of the last record of the stream (record timestamp, else arrival time).",
            labels=names,
        )
        for stream in self.pipeline.streams:
            labels = list(stream.labels)
            records.add_metric(labels, stream.records)
            # every reason from 0, so rate() sees the first truncation of a stream
            for reason in FINISH_REASONS:
                finish.add_metric([*labels, reason], stream.finish_reasons[reason])
            for model, count in stream.served_models.items():
                served.add_metric([*labels, model], count)
            for fingerprint, count in stream.system_fingerprints.items():
                fingerprints.add_metric([*labels, fingerprint], count)
            if stream.last_record_time is not None:
                last.add_metric(labels, stream.last_record_time)
        yield from (records, finish, served, fingerprints, last)

    def _signal_metrics(self) -> Iterator[Metric]:
        names = list(self.pipeline.streams.label_names)
        histograms = {
            attr: HistogramMetricFamily(name, help_text, labels=names)
            for attr, name, help_text in (
                ("output_tokens", "llm_output_tokens",
                 "Visible output tokens per record (provider usage minus reasoning, else counted "
                 "with the tokenizer)."),
                ("input_tokens", "llm_input_tokens", "Input tokens per record, where reported."),
                ("reasoning_tokens", "llm_reasoning_tokens",
                 "Hidden reasoning tokens per record, where reported separately."),
            )
        }
        methods = CounterMetricFamily(
            "llm_output_token_counts",
            "Records by how output tokens were obtained: provider usage, or the tokenizer "
            "(with the encoding used).",
            labels=[*names, "method", "encoding"],
        )
        refusals = CounterMetricFamily(
            "llm_refusals", "Records judged refusals.", labels=names
        )
        by_kind = CounterMetricFamily(
            "llm_refusals_by_kind",
            "Refusals by how they were recognized: structured, phrase, custom.",
            labels=[*names, "kind"],
        )
        checked = CounterMetricFamily(
            "llm_format_checked",
            "Records checked against the stream's format expectation (refusals excluded).",
            labels=names,
        )
        invalid = CounterMetricFamily(
            "llm_format_invalid", "Checked records that failed, by reason.",
            labels=[*names, "reason"],
        )
        embedded = CounterMetricFamily(
            "llm_embeddings",
            "Records embedded, by source of the vector: user (supplied) or builtin.",
            labels=[*names, "source"],
        )
        for stream in self.pipeline.streams:
            labels = list(stream.labels)
            totals = stream.signals
            for attr, family in histograms.items():
                histogram = getattr(totals, attr)
                if histogram.observations:
                    family.add_metric(labels, histogram.cumulative(), histogram.total)
            for (method, encoding), count in totals.token_methods.items():
                methods.add_metric([*labels, method, encoding], count)
            refusals.add_metric(labels, sum(totals.refusals.values()))
            for kind in ("structured", "phrase", "custom"):
                by_kind.add_metric([*labels, kind], totals.refusals[kind])
            if totals.format_checked:
                checked.add_metric(labels, totals.format_checked)
                # every reason from 0, so rate() sees the first failure of each kind
                for reason in INVALID_REASONS:
                    invalid.add_metric([*labels, reason], totals.format_invalid[reason])
            for source, count in totals.embeddings.items():
                embedded.add_metric([*labels, source], count)
        yield from histograms.values()
        yield from (methods, refusals, by_kind, checked, invalid, embedded)

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
        for encoding, source in sorted(measurer.tokens.loaded_sources().items()):
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
                "Unusable state files or entries set aside at start-up.",
                value=self.state.load_failures,
            )
        yield CounterMetricFamily(
            "llm_exporter_processing_seconds",
            "CPU-bound time spent normalizing and accounting records.",
            value=self.pipeline.processing_seconds,
        )


def build_registry(collector: ExporterCollector) -> CollectorRegistry:
    """A private registry per exporter instance: tests and the demo can run several side by side."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
