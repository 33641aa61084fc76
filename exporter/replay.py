"""`replay`: feed whole files through the same pipeline, as fast as possible.

Used to test a config on yesterday's logs and to build the JSON report the
detection benchmarks read. Files are read from their first byte; a last line
without a newline is still a complete record here, because the file is done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from exporter.config import Config
from exporter.inputs.lines import LineSplitter
from exporter.inputs.stats import InputStats
from exporter.records import RejectedRecord
from exporter.streams.pipeline import Pipeline
from exporter.streams.view import streams_view

CHUNK = 1024 * 1024


@dataclass
class ReplaySummary:
    files: int
    bytes_read: int
    records: int
    rejected: int
    seconds: float


def replay_files(
    pipeline: Pipeline, paths: Sequence[str], max_line_bytes: int, progress: TextIO | None = None
) -> ReplaySummary:
    stats = InputStats(name="replay", kind="replay")
    started = time.perf_counter()
    too_large = RejectedRecord("too_large", f"line longer than max_line_bytes={max_line_bytes}")
    for index, path in enumerate(paths):
        splitter = LineSplitter(max_line_bytes)
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                stats.bytes_read += len(chunk)
                result = splitter.feed(chunk)
                if result.oversized:
                    pipeline.reject(stats, too_large, result.oversized)
                pipeline.ingest_lines(result.lines, stats)
                if progress is not None:
                    progress.write(
                        f"\r[{index + 1}/{len(paths)}] {Path(path).name}: "
                        f"{stats.records} records, {stats.rejected} rejected"
                    )
        last = splitter.flush()
        if last is not None:
            pipeline.ingest_lines([last], stats)
    if progress is not None:
        progress.write("\n")
    return ReplaySummary(
        files=len(paths),
        bytes_read=stats.bytes_read,
        records=stats.records,
        rejected=stats.rejected,
        seconds=time.perf_counter() - started,
    )


def build_report(pipeline: Pipeline, summary: ReplaySummary) -> dict[str, Any]:
    """DESIGN.md's replay report, with each event's examples (the outputs that carried the
    change, clipped) so a report explains itself. Reports get shared and outputs may hold
    personal data: `evidence.enabled: false` in the replay's config leaves every text out."""
    return {
        "records": summary.records,
        "rejected": summary.rejected,
        "rejected_by_reason": {k: v for k, v in pipeline.rejections.items() if v},
        "streams": streams_view(pipeline.streams, pipeline.evidence_settings.enabled),
    }


def print_summary(pipeline: Pipeline, summary: ReplaySummary, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    rate = summary.records / summary.seconds if summary.seconds > 0 else 0.0
    out.write(
        f"replayed {summary.files} file(s), {summary.bytes_read} bytes in {summary.seconds:.2f}s: "
        f"{summary.records} records ({rate:.0f}/s), {summary.rejected} rejected\n"
    )
    for reason, count in sorted(pipeline.rejections.items()):
        if count:
            out.write(f"  rejected {reason}: {count}\n")
    names = pipeline.streams.label_names
    for stream in sorted(pipeline.streams, key=lambda s: s.labels):
        labels = ", ".join(f"{n}={v}" for n, v in zip(names, stream.labels, strict=True))
        out.write(f"  stream {{{labels}}}: {stream.records} records\n")
        if stream.detectors is None:
            continue
        for signal, events in sorted(stream.detectors.events.items()):
            where = ", ".join(str(e["record"]) for e in events[:10])
            more = f" (+{len(events) - 10} more)" if len(events) > 10 else ""
            out.write(f"    {signal}: {len(events)} drift event(s) at record {where}{more}\n")


def max_line_bytes_of(config: Config) -> int:
    limits = [spec.max_line_bytes for spec in config.file_inputs]
    return max(limits) if limits else 1024 * 1024
