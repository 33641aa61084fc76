"""Memory per stream and `/metrics` collection time against the number of streams.

Memory: tracemalloc over the pipeline after every stream has completed its
baselines (steady state), for a growing number of streams; the slope is the
cost of one more stream. Scrape: the whole work of a `/metrics` request with N
streams (exporter.web.metrics_handler.MetricsEndpoint.body: negotiation, stream
families, the other families, gzip when accepted), in both formats, uncompressed
and at the gzip level served (1) and zlib's default (6).

    python benchmarks/bench_scale.py [--streams 1 10 50] [--scrape-streams 1000] [--no-memory]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.service import Exporter
from exporter.web.metrics_handler import MetricsEndpoint

ACCEPTS = {"text": "", "openmetrics": "application/openmetrics-text"}
REPEATS = 7

WORDS = "invoice refund parcel status login plan card delivery order account".split()


def record(route: str, i: int) -> dict:
    text = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(20 + i % 30))
    return {"route": route, "request": {"model": "gpt-4o"},
            "response": {"object": "chat.completion", "model": "gpt-4o-2024-08-06",
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 20 + i % 30}}}


def exporter_with(
    streams: int, per_stream: int, baseline: int, expected_run_time: int = 100_000
) -> Exporter:
    """An exporter whose `streams` streams have seen `per_stream` records each, every
    calibration finished; a format rule on every stream, so every family has samples."""
    config = parse_config({"inputs": [{"type": "http"}],
                           "max_streams": max(1000, streams + 1),
                           "signals": {"format_validity": [
                               {"match_re": {"route": ".*"}, "expect": "regex",
                                "pattern": "[a-z ]+"}]},
                           "detectors": {"baseline_size": baseline,
                                         "expected_run_time": expected_run_time}})
    exporter = Exporter(config)
    exporter.pipeline.measurer.tokens.preload()
    stats = InputStats("bench", "bench")
    for i in range(per_stream):
        exporter.pipeline.ingest_values([record(f"/r{s}", i) for s in range(streams)], stats)
    exporter.pipeline.settle(wait=True)  # thresholds are simulated on a thread
    return exporter


def memory_per_stream(counts: list[int], baseline: int) -> list[tuple[int, float]]:
    rows = []
    for count in counts:
        gc.collect()
        tracemalloc.start()
        exporter = exporter_with(count, baseline + 50, baseline)
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        ready = all(d.baseline_ready for s in exporter.pipeline.streams
                    for d in s.detectors.detectors.values())
        assert ready
        rows.append((count, current / 1024))
        del exporter
    return rows


def timed(work: Callable[[], Awaitable[bytes]]) -> tuple[float, float, int]:
    """Median and best ms of REPEATS runs after a warm-up, and the body size."""

    async def run() -> tuple[list[float], bytes]:
        body = await work()
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            body = await work()
            times.append((time.perf_counter() - started) * 1000)
        return times, body

    times, body = asyncio.run(run())
    return statistics.median(times), min(times), len(body)


def scrape_table(streams: int) -> None:
    # Steady state, so every per-stream series exists: baselines of 20 records, and a
    # short expected run time so that 1,000 embedding calibrations take seconds, not
    # minutes (it changes thresholds, not which series there are).
    exporter = exporter_with(streams, 30, 20, expected_run_time=128)
    families = sum(1 for _ in MetricsEndpoint(exporter.collector).rest.collect())

    def scrape(accept: str, gzip: int | None) -> Callable[[], Awaitable[bytes]]:
        endpoint = MetricsEndpoint(exporter.collector, gzip_level=gzip or 1)
        encoding = "gzip" if gzip is not None else ""

        async def work() -> bytes:
            return (await endpoint.body(accept, encoding))[0]

        return work

    rows = [(fmt, "-" if level is None else str(level), *timed(scrape(accept, level)))
            for fmt, accept in ACCEPTS.items() for level in (None, 1, 6)]
    body = asyncio.run(MetricsEndpoint(exporter.collector).body(""))[0]
    lines = sum(1 for line in body.splitlines() if not line.startswith(b"#"))
    print(f"/metrics with {streams} streams ({lines:,} samples; {families} families outside "
          f"the streams; median and best of {REPEATS}):")
    print("| format | gzip level | ms (median) | ms (best) | bytes |")
    print("| --- | --- | ---: | ---: | ---: |")
    for fmt, gzip, median, best, size in rows:
        print(f"| {fmt} | {gzip} | {median:.1f} | {best:.1f} | {size:,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 10, 40])
    parser.add_argument("--baseline", type=int, default=1000)
    parser.add_argument("--scrape-streams", type=int, default=1000)
    parser.add_argument("--no-memory", action="store_true", help="only the scrape table")
    args = parser.parse_args()
    scrape_table(args.scrape_streams)
    if args.no_memory:
        return
    rows = memory_per_stream(args.streams, args.baseline)
    print(f"memory in steady state (baseline_size {args.baseline}, all baselines learned):")
    print("| streams | traced KiB | KiB per stream (slope from the first row) |")
    print("| ---: | ---: | ---: |")
    first_count, first_kib = rows[0]
    for count, kib in rows:
        slope = (kib - first_kib) / (count - first_count) if count != first_count else 0.0
        print(f"| {count} | {kib:,.0f} | {slope:,.1f} |")


if __name__ == "__main__":
    main()
